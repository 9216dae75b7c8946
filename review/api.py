"""The review API: studies, a rater's own queue, ratings, gate results and releases.

Raters reach only their own queue and ratings; what they get back names items by token and
never carries an origin, an id or a file name.
"""

from __future__ import annotations

from django.http import QueryDict
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import errors, has_perm
from review import selectors
from review.api_lead import ReleaseDownload, StudyCreateSerializer, StudyLeadActions
from review.models import Release, Study, StudyState
from review.services.rating import rater_queue, rating_submit

CanViewStudies = has_perm("review.view_study")
CanRate = has_perm("review.rate_study")
CanViewReleases = has_perm("review.view_release")


class StudySerializer(serializers.ModelSerializer):
    raters = serializers.SerializerMethodField()
    criteria_version = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "batch",
            "state",
            "sample_size",
            "control_ratio",
            "seed",
            "warmup_count",
            "retest_share",
            "allow_changes",
            "instructions",
            "instructions_version",
            "criteria",
            "criteria_version",
            "plan",
            "raters",
            "job",
            "created_at",
            "opened_at",
            "closed_at",
        ]

    def get_raters(self, study) -> list[str]:
        return [sr.rater.username for sr in study.raters.select_related("rater")]

    def get_criteria_version(self, study) -> int:
        return int(study.criteria.get("version", 1))


class ProgressSerializer(serializers.Serializer):
    rater = serializers.CharField()
    index = serializers.IntegerField()
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    finished = serializers.BooleanField()


@extend_schema_view(
    list=extend_schema(responses={200: StudySerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: StudySerializer, **errors(403, 404)}),
    create=extend_schema(
        request=StudyCreateSerializer,
        responses={201: StudySerializer, **errors(400, 403, 415, 503)},
        description="Open a study on a finished batch; it is prepared by a job and opens for "
        "rating when its images are blinded (state 'open').",
    ),
)
class StudyViewSet(StudyLeadActions, viewsets.ReadOnlyModelViewSet):
    """Studies for leads and engineers. While a study is open only progress counts are shown."""

    serializer_class = StudySerializer
    permission_classes = [permissions.IsAuthenticated, CanViewStudies]
    queryset = Study.objects.select_related("batch").order_by("-created_at")

    @extend_schema(responses={200: ProgressSerializer(many=True), **errors(403, 404)})
    @action(detail=True)
    def progress(self, request, pk=None):
        return Response(selectors.study_progress(study=self.get_object()))

    @extend_schema(responses={200: dict, **errors(403, 404)})
    @action(detail=True)
    def gate(self, request, pk=None):
        report = selectors.study_gate_report(study=self.get_object())
        if report is None:
            raise NotFound("the gate is evaluated when the study is closed")
        return Response(report)


class QueueItemSerializer(serializers.Serializer):
    token = serializers.CharField()
    image = serializers.CharField(help_text="URL of the blinded image")
    kind = serializers.CharField(help_text="warmup or rating (repeats look like any item)")


class QueueSerializer(serializers.Serializer):
    study = serializers.IntegerField()
    state = serializers.CharField()
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    current = QueueItemSerializer(allow_null=True)
    next = QueueItemSerializer(allow_null=True)


def _queue_item(assignment) -> dict | None:
    if assignment is None:
        return None
    return {
        "token": assignment.token,
        "image": reverse("review:image", kwargs={"token": assignment.token}),
        # A repeat is not announced: it is a rating like any other to the rater.
        "kind": "warmup" if assignment.kind == "warmup" else "rating",
    }


NOT_ASSIGNED = "no such study among your assignments"


class RaterQueueView(APIView):
    """The signed-in rater's next item and the one after it, for prefetching."""

    permission_classes = [permissions.IsAuthenticated, CanRate]

    @extend_schema(responses={200: QueueSerializer, **errors(403, 404)})
    def get(self, request, study_id: int):
        study = selectors.rater_queue_study(study_id=study_id, rater=request.user)
        if study is None:
            # One answer for a study that does not exist and one seated to others: a rater
            # cannot count studies by probing ids.
            raise NotFound(NOT_ASSIGNED)
        queue = rater_queue(study=study, rater=request.user)
        open_ = study.state == StudyState.OPEN
        return Response(
            {
                "study": study.pk,
                "state": study.state,
                "total": queue["total"],
                "done": queue["done"],
                "current": _queue_item(queue["current"]) if open_ else None,
                "next": _queue_item(queue["next"]) if open_ else None,
            }
        )


class ScoreField(serializers.IntegerField):
    """A whole number, not coerced from other types: a JSON integer, or in a form body (where
    everything is text) its ASCII digits. "7" in JSON, 7.0, true and "７" are refused."""

    def to_internal_value(self, data):
        form = isinstance(getattr(self.parent, "initial_data", None), QueryDict)
        if form and isinstance(data, str) and data.isascii() and data.isdigit():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RatingInSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=64)
    score = ScoreField(min_value=1, max_value=7)
    seconds = serializers.FloatField(min_value=0)


class RatingOutSerializer(serializers.Serializer):
    score = serializers.IntegerField()
    created = serializers.BooleanField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class RatingView(APIView):
    """Submit a rating for an item of your queue. Submitting the same rating twice is
    harmless; a submitted rating is locked unless the study allows changes."""

    permission_classes = [permissions.IsAuthenticated, CanRate]

    @extend_schema(
        request=RatingInSerializer,
        responses={
            200: RatingOutSerializer,
            201: RatingOutSerializer,
            **errors(400, 403, 415),
        },
    )
    def post(self, request):
        data = RatingInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # A refusal (RatingRefused: 403, InvalidRating: 400) is answered by the exception handler.
        rating, created = rating_submit(
            token=data.validated_data["token"],
            rater=request.user,
            score=data.validated_data["score"],
            seconds=data.validated_data["seconds"],
        )
        # Counts only: the next item is marked as served when the screen asks the queue for it.
        progress = selectors.rater_progress(study_id=rating.study_id, rater=request.user)
        return Response(
            {
                "score": rating.score,
                "created": created,
                "done": progress["done"],
                "total": progress["total"],
            },
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ReleaseSerializer(serializers.ModelSerializer):
    approved_by = serializers.CharField(source="approved_by.username")
    # None once the export job is gone (the job row is deleted: SET_NULL).
    export_state = serializers.CharField(source="export_job.state", default=None, allow_null=True)

    class Meta:
        model = Release
        fields = [
            "id",
            "batch",
            "study",
            "approved_by",
            "approved_at",
            "note",
            "image_count",
            "criteria_version",
            "manifest_sha256",
            "manifest",
            "gate",
            "export_state",
        ]


@extend_schema_view(
    list=extend_schema(responses={200: ReleaseSerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: ReleaseSerializer, **errors(403, 404)}),
)
class ReleaseViewSet(ReleaseDownload, viewsets.ReadOnlyModelViewSet):
    serializer_class = ReleaseSerializer
    permission_classes = [permissions.IsAuthenticated, CanViewReleases]
    queryset = Release.objects.select_related("approved_by", "export_job")
