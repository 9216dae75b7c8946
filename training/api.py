"""The training API: runs (launch with validated settings, read with progress, cancel, resume,
artifact files) and the fairness comparison of classifier runs. Launching is validated by the
admin launch form and done by the same service; files are served by the run page's view."""

from __future__ import annotations

import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import ActionPermissions, errors, form_validated, has_perm
from fairskin.labels import DIAGNOSIS_CHOICES
from jobs.api import JobSerializer, job_answer
from training import fairness_verdicts, run_display, selectors, services, views
from training.forms import RunLaunchForm
from training.models import Run, RunKind


class RunSerializer(serializers.ModelSerializer):
    job = JobSerializer(allow_null=True)
    state = serializers.CharField(source="job.state", default=None, allow_null=True)
    artifacts = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "kind",
            "name",
            "parent",
            "base_model",
            "config",
            "selection",
            "image_count",
            "state",
            "job",
            "final_loss",
            "tokens",
            "evaluation",
            "is_confidence_model",
            "created_at",
            "artifacts",
        ]

    def get_artifacts(self, run) -> list[str]:
        return run_display.artifact_files(run.artifacts_dir) if self.context.get("detail") else []


class RunCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=RunKind.values)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    # (The stubs type Field.parent, the enclosing serializer; this is the run's parent.)
    parent = serializers.IntegerField(  # type: ignore[assignment]
        required=False, allow_null=True, help_text="LoRA: a TI run; joint: a LoRA run."
    )
    base_model = serializers.CharField(max_length=300, required=False, allow_blank=True)
    datasets = serializers.ListField(child=serializers.CharField(max_length=64), min_length=1)
    diagnoses = serializers.ListField(
        child=serializers.ChoiceField(choices=[c for c, _ in DIAGNOSIS_CHOICES]), required=False
    )
    synthetic_datasets = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False
    )
    fsts = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=6), required=False
    )
    split = serializers.ChoiceField(choices=["train", "val", "test", "any"], default="train")
    config = serializers.DictField(
        default=dict, help_text="Settings that differ from the kind's defaults."
    )


def _launch_form_data(data: dict) -> dict:
    """The API's JSON as the launch form reads its fields."""
    form = {key: value for key, value in data.items() if value is not None}
    form["config"] = json.dumps(data.get("config") or {})
    return form


@extend_schema_view(
    list=extend_schema(responses={200: RunSerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: RunSerializer, **errors(403, 404)}),
    create=extend_schema(
        request=RunCreateSerializer,
        responses={201: RunSerializer, **errors(400, 403, 415, 503)},
        description="Launch a training or classifier run; poll it (or its job) until its "
        "state is terminal.",
    ),
)
class RunViewSet(ActionPermissions, viewsets.GenericViewSet):
    serializer_class = RunSerializer
    permission_classes = [permissions.IsAuthenticated, has_perm("training.view_run")]
    queryset = Run.objects.select_related("job").order_by("-created_at", "-pk")

    action_perms = dict.fromkeys(["create", "cancel", "resume"], "training.launch_run")

    def list(self, request):
        return Response(RunSerializer(self.get_queryset()[:100], many=True).data)

    def retrieve(self, request, pk=None):
        return Response(RunSerializer(self.get_object(), context={"detail": True}).data)

    def create(self, request):
        data = RunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind = data.validated_data["kind"]
        form = RunLaunchForm(_launch_form_data(data.validated_data), kind=kind)
        form_validated(form)
        run = services.run_create(**form.run_create_kwargs(), user=request.user)
        return Response(RunSerializer(run, context={"detail": True}).data, status=201)

    @extend_schema(request=None, responses={200: JobSerializer, **errors(400, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return job_answer(services.run_cancel(run=self.get_object(), user=request.user), 200)

    @extend_schema(request=None, responses={202: JobSerializer, **errors(400, 403, 404, 409, 503)})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return job_answer(services.run_resume(run=self.get_object(), user=request.user))

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, required=True, description="A name from `artifacts`.")
        ],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **errors(403, 404)},
    )
    @action(detail=True, methods=["get"])
    def artifact(self, request, pk=None):
        """One of the run's artifact files, served as the run page serves it."""
        name = request.query_params.get("name", "")
        if not name:
            raise NotFound("name one of the run's artifacts (?name=)")
        return views.run_artifact(request._request, run_id=self.get_object().pk, name=name)


class FairnessSerializer(serializers.Serializer):
    rows = serializers.ListField(child=serializers.DictField())
    definitions = serializers.DictField()


COMPARE_PARAMETERS = [
    OpenApiParameter(
        "baseline",
        int,
        description="A finished classifier run; default: the "
        "confidence model, else the newest real-only classifier.",
    ),
    OpenApiParameter(
        "runs",
        int,
        many=True,
        description="Classifier runs to compare with it; "
        "default: the newest ones trained with synthetic images.",
    ),
]


class FairnessView(APIView):
    """The fairness comparison of classifier runs with a baseline (per skin-type group, with
    paired intervals), as the fairness page's JSON export."""

    permission_classes = [permissions.IsAuthenticated, has_perm("training.view_run")]

    @extend_schema(
        parameters=COMPARE_PARAMETERS, responses={200: FairnessSerializer, **errors(403, 404)}
    )
    def get(self, request):
        baseline, others = selectors.classifier_comparison_runs(
            baseline_id=request.query_params.get("baseline"),
            run_ids=request.query_params.getlist("runs"),
        )
        if baseline is None:
            raise NotFound("no finished baseline classifier")
        comparison = fairness_verdicts.fairness_comparison(baseline=baseline, others=others)
        return Response(
            {
                "rows": fairness_verdicts.comparison_rows(comparison),
                "definitions": fairness_verdicts.DEFINITIONS,
            }
        )
