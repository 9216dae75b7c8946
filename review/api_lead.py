"""What a lead does to a study over the API: open one, close it (the gate is evaluated),
approve or reject its batch, and download a release. The same services and the same form as
the pages; closing, approving and rejecting are final, so each asks ``confirm: true``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from common.api import ActionPermissions, errors, form_validated
from review import views
from review.forms import DEFAULT_CRITERIA, StudyForm
from review.services import gate as gate_services
from review.services import release as release_services
from review.services import study as study_services


class StudyCreateSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="A finished batch awaiting a study.")
    raters = serializers.ListField(
        child=serializers.CharField(max_length=150), help_text="Three dermatologists' usernames."
    )
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    sample_size = serializers.IntegerField(default=500)
    control_ratio = serializers.FloatField(default=0.25)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    warmup_count = serializers.IntegerField(default=3)
    retest_share = serializers.FloatField(default=0.05)
    allow_changes = serializers.BooleanField(default=False)
    mean_min = serializers.FloatField(default=DEFAULT_CRITERIA.mean_min)
    median_share_min = serializers.FloatField(default=DEFAULT_CRITERIA.median_share_min)
    low_share_max = serializers.FloatField(default=DEFAULT_CRITERIA.low_share_max)
    use_interval = serializers.BooleanField(default=False)
    per_fst = serializers.BooleanField(default=False)
    instructions = serializers.CharField(required=False, allow_blank=True)


class ConfirmSerializer(serializers.Serializer):
    confirm = serializers.BooleanField(help_text="true: I know this is final.")


class ApproveSerializer(ConfirmSerializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class RejectSerializer(ConfirmSerializer):
    reason = serializers.CharField(max_length=2000)


def _confirmed(serializer_class, request, refused: str) -> dict:
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    if data.validated_data["confirm"] is not True:
        raise ValidationError({"confirm": [f"{refused}: it is final; send confirm: true"]})
    return dict(data.validated_data)


def _study_form_data(data: dict) -> dict:
    """The API's JSON as the study form reads it (raters by primary key)."""
    names = data.pop("raters")
    users = dict(get_user_model().objects.filter(username__in=names).values_list("username", "pk"))
    missing = [n for n in names if n not in users]
    if missing:
        raise ValidationError({"raters": [f"no such user: {', '.join(missing)}"]})
    return {**{k: v for k, v in data.items() if v is not None}, "raters": [users[n] for n in names]}


class StudyLeadActions(ActionPermissions):
    """Mixed into the studies' viewset: its write operations."""

    action_perms = {
        "create": "review.add_study",
        **dict.fromkeys(["close", "approve", "reject"], "review.manage_study"),
    }

    def create(self, request):
        data = StudyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        form = StudyForm(_study_form_data(dict(data.validated_data)))
        form_validated(form)
        study = study_services.study_create(**form.study_create_kwargs(), user=request.user)
        return Response(self.get_serializer(study).data, status=201)  # type: ignore[attr-defined]

    @extend_schema(request=ConfirmSerializer, responses={200: dict, **errors(400, 403, 404)})
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        """Close the study and evaluate its gate; answers the gate report."""
        study = self.get_object()  # type: ignore[attr-defined]
        _confirmed(ConfirmSerializer, request, f"study {study.pk} was not closed")
        study = gate_services.study_close(study=study, user=request.user)
        return Response(study.gate)

    @extend_schema(request=ApproveSerializer, responses={201: dict, **errors(400, 403, 404, 503)})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve the study's batch (its gate must have passed): a release, whose export is
        the release's ``export_state`` job."""
        study = self.get_object()  # type: ignore[attr-defined]
        d = _confirmed(ApproveSerializer, request, f"batch {study.batch_id} was not approved")
        release = release_services.release_approve(
            study=study, user=request.user, note=d.get("note", "")
        )
        from review.api import ReleaseSerializer  # the release as /api/releases/ shows it

        return Response(ReleaseSerializer(release).data, status=201)

    @extend_schema(request=RejectSerializer, responses={200: dict, **errors(400, 403, 404)})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        study = self.get_object()  # type: ignore[attr-defined]
        d = _confirmed(RejectSerializer, request, f"batch {study.batch_id} was not rejected")
        rejection = release_services.release_reject(
            batch=study.batch, study=study, user=request.user, reason=d["reason"]
        )
        return Response({"batch": study.batch_id, "study": study.pk, "reason": rejection.reason})


class ReleaseDownload:
    """Mixed into the releases' viewset: the release zip, served by the release page's view."""

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **errors(403, 404)})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        release = self.get_object()  # type: ignore[attr-defined]
        return views.release_download(request._request, release_id=release.pk)
