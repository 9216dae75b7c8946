"""The generation API: batches (launch, read with per-stratum progress, samples with their
metrics, cancel, resume, CSV/JSON export). Launching goes through the same service as the
admin form, which checks every setting against the generation spec; the export is the batch
page's own view."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from common.api import ActionPermissions, FormatIsAFileFormat, errors, has_perm
from fairskin.labels import DIAGNOSIS_CHOICES
from generation import selectors, services, views
from generation.models import Batch, Sample, Verdict
from jobs.api import JobSerializer

SAMPLES_PAGE = 100


class StratumSerializer(serializers.Serializer):
    diagnosis = serializers.CharField()
    fst = serializers.IntegerField()
    quota = serializers.IntegerField()
    cap = serializers.IntegerField()
    generated = serializers.IntegerField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    shortfall = serializers.IntegerField(allow_null=True)
    complete = serializers.BooleanField()


class BatchSerializer(serializers.ModelSerializer):
    job = JobSerializer(allow_null=True)
    strata = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "name",
            "state",
            "model_run",
            "target",
            "diagnoses",
            "fst_distribution",
            "overgeneration",
            "scheduler",
            "steps",
            "guidance",
            "size",
            "seed",
            "scoring",
            "filter_percentile",
            "dataset",
            "report",
            "created_at",
            "finished_at",
            "job",
            "strata",
        ]

    @extend_schema_field(StratumSerializer(many=True))
    def get_strata(self, batch) -> Any:
        if not self.context.get("detail"):
            return []
        return StratumSerializer(selectors.batch_strata(batch=batch), many=True).data


class BatchCreateSerializer(serializers.Serializer):
    """The settings a batch is launched with; those left out take the spec's defaults."""

    model_run = serializers.IntegerField(help_text="A finished LoRA or joint run.")
    target = serializers.IntegerField(help_text="Accepted images wanted.")
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    diagnoses = serializers.ListField(
        child=serializers.ChoiceField(choices=[c for c, _ in DIAGNOSIS_CHOICES]), required=False
    )
    fst_distribution = serializers.DictField(
        child=serializers.FloatField(min_value=0),
        required=False,
        help_text='Share per Fitzpatrick type, e.g. {"1": 1, "6": 1}.',
    )
    overgeneration = serializers.FloatField(required=False)
    scheduler = serializers.CharField(max_length=16, required=False)
    steps = serializers.IntegerField(required=False)
    guidance = serializers.FloatField(required=False)
    negative_prompt = serializers.CharField(max_length=500, required=False, allow_blank=True)
    size = serializers.IntegerField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False)
    shard_size = serializers.IntegerField(required=False)
    device_batch = serializers.IntegerField(required=False)
    scoring = serializers.DictField(required=False)
    filter_percentile = serializers.FloatField(required=False)


class SampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Sample
        fields = [
            "id",
            "diagnosis",
            "fst",
            "index",
            "seed",
            "prompt",
            "steps",
            "guidance",
            "scheduler",
            "verdict",
            "reasons",
            "metrics",
            "checks",
            "failed_checks",
            "created_at",
        ]


class SamplePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    pages = serializers.IntegerField()
    results = SampleSerializer(many=True)


@extend_schema_view(
    list=extend_schema(responses={200: BatchSerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: BatchSerializer, **errors(403, 404)}),
    create=extend_schema(
        request=BatchCreateSerializer,
        responses={201: BatchSerializer, **errors(400, 403, 415, 503)},
        description="Launch a generation batch; poll it until its state is finished.",
    ),
)
class BatchViewSet(ActionPermissions, viewsets.GenericViewSet):
    serializer_class = BatchSerializer
    permission_classes = [permissions.IsAuthenticated, has_perm("generation.view_batch")]
    queryset = Batch.objects.select_related("job").order_by("-created_at", "-pk")

    action_perms = dict.fromkeys(["create", "cancel", "resume"], "generation.launch_batch")

    def get_content_negotiator(self):
        if getattr(self, "action", None) == "export":  # set once the request is initialised
            return FormatIsAFileFormat()
        return super().get_content_negotiator()

    def list(self, request):
        return Response(BatchSerializer(self.get_queryset()[:100], many=True).data)

    def retrieve(self, request, pk=None):
        return Response(BatchSerializer(self.get_object(), context={"detail": True}).data)

    def create(self, request):
        data = BatchCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        settings = dict(data.validated_data)
        run = selectors.model_run_get(run_id=settings.pop("model_run"))
        if run is None:
            raise ValidationError({"model_run": ["there is no such run"]})
        batch = services.batch_create(model_run=run, user=request.user, **settings)
        return Response(BatchSerializer(batch, context={"detail": True}).data, status=201)

    @extend_schema(request=None, responses={200: BatchSerializer, **errors(400, 403, 404, 409)})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        batch = services.batch_cancel(batch=self.get_object(), user=request.user)
        return Response(BatchSerializer(batch, context={"detail": True}).data)

    @extend_schema(
        request=None, responses={200: BatchSerializer, **errors(400, 403, 404, 409, 503)}
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        batch = services.batch_resume(batch=self.get_object(), user=request.user)
        return Response(BatchSerializer(batch, context={"detail": True}).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="1, 2, … (100 samples a page)"),
            OpenApiParameter("diagnosis", str),
            OpenApiParameter("fst", int),
            OpenApiParameter("verdict", str, enum=Verdict.values),
        ],
        responses={200: SamplePageSerializer, **errors(403, 404)},
    )
    @action(detail=True, methods=["get"])
    def samples(self, request, pk=None):
        """The batch's samples with their metrics, checks and verdicts."""
        q = request.query_params
        samples = selectors.batch_gallery(
            batch=self.get_object(),
            diagnosis=q.get("diagnosis") or "",
            fst=q.get("fst") or "",
            verdict=q.get("verdict") or "",
        )
        page = Paginator(samples, SAMPLES_PAGE).get_page(q.get("page"))
        return Response(
            {
                "count": page.paginator.count,
                "page": page.number,
                "pages": page.paginator.num_pages,
                "results": SampleSerializer(page.object_list, many=True).data,
            }
        )

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["csv", "json"], default="csv")],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
            **errors(403, 404),
        },
    )
    @action(detail=True, methods=["get"], url_path="export")
    def export(self, request, pk=None):
        """Every sample with its settings, scores and verdict (CSV), or with the report and
        provenance too (JSON): the batch page's export."""
        return views.batch_export(request._request, batch_id=self.get_object().pk)
