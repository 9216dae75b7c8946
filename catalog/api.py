"""The catalog API: datasets (list, read with their diagnosis x skin-type table), import an
upload, preprocess, split. Validation is the admin forms' own."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog import selectors, services
from catalog.forms import DatasetUploadForm, SplitForm, upload_launch_kwargs
from catalog.models import AllowedUse, Dataset
from common.api import ActionPermissions, errors, form_validated, has_perm
from fairskin.datasets import FORMATS
from jobs.api import JobSerializer, job_answer


class DatasetSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "source_format",
            "licence",
            "description",
            "allowed_use",
            "mapping_tier",
            "split_seed",
            "split_fractions",
            "created_by",
            "created_at",
        ]


class DatasetDetailSerializer(DatasetSerializer):
    summary = serializers.SerializerMethodField()
    splits = serializers.SerializerMethodField()

    class Meta(DatasetSerializer.Meta):
        fields = [*DatasetSerializer.Meta.fields, "summary", "splits"]

    def get_summary(self, dataset) -> dict:
        return selectors.dataset_summary(dataset=dataset)

    def get_splits(self, dataset) -> dict[str, int]:
        return selectors.dataset_split_counts(dataset=dataset)


class ImportSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=list(FORMATS))
    name = serializers.SlugField(max_length=64, required=False)
    mapping = serializers.ChoiceField(choices=["strict", "broad"], required=False)
    allowed_use = serializers.ChoiceField(choices=AllowedUse.choices, required=False)
    licence = serializers.CharField(max_length=200, required=False)
    metadata = serializers.FileField(help_text="The dataset's metadata CSV.")
    images = serializers.FileField(required=False, help_text="A zip archive of the images.")


class PreprocessSerializer(serializers.Serializer):
    hair_removal = serializers.BooleanField(default=False)
    force = serializers.BooleanField(default=False, help_text="Redo images already done.")


class SplitSerializer(serializers.Serializer):
    seed = serializers.IntegerField(default=0)
    train = serializers.FloatField(default=0.7, min_value=0, max_value=1)
    val = serializers.FloatField(default=0.15, min_value=0, max_value=1)
    test = serializers.FloatField(default=0.15, min_value=0, max_value=1)


SPLIT_COUNTS = inline_serializer(
    "SplitCounts", {"counts": serializers.DictField(child=serializers.IntegerField())}
)


@extend_schema_view(
    list=extend_schema(responses={200: DatasetSerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: DatasetDetailSerializer, **errors(403, 404)}),
    create=extend_schema(
        request={"multipart/form-data": ImportSerializer},
        responses={202: JobSerializer, **errors(400, 403, 415, 503)},
        description="Upload a dataset's metadata CSV (and optionally its images as a zip); "
        "the import runs as the returned job.",
    ),
)
class DatasetViewSet(ActionPermissions, viewsets.GenericViewSet):
    permission_classes = [permissions.IsAuthenticated, has_perm("catalog.view_dataset")]
    queryset = Dataset.objects.order_by("name")
    lookup_field = "name"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    serializer_class = DatasetSerializer

    action_perms = {
        "create": "catalog.import_dataset",
        "preprocess": "catalog.process_dataset",
        "split": "catalog.process_dataset",
    }

    def list(self, request):
        return Response(DatasetSerializer(self.get_queryset(), many=True).data)

    def retrieve(self, request, name=None):
        return Response(DatasetDetailSerializer(self.get_object()).data)

    def create(self, request):
        data = request.POST.copy()  # the fields without the files (no copy of an upload)
        data.setdefault("mapping", "strict")  # the form's initial choice, as the page sends it
        form = DatasetUploadForm(data, request.FILES)
        job = services.dataset_upload_launch(
            **upload_launch_kwargs(form_validated(form)), user=request.user
        )
        return job_answer(job)

    @extend_schema(
        request=PreprocessSerializer, responses={202: JobSerializer, **errors(400, 403, 404, 503)}
    )
    @action(detail=True, methods=["post"])
    def preprocess(self, request, name=None):
        dataset = self.get_object()
        data = PreprocessSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.dataset_preprocess_launch(
            dataset=dataset,
            hair_removal=data.validated_data["hair_removal"],
            force=data.validated_data["force"],
            user=request.user,
        )
        return job_answer(job)

    @extend_schema(request=SplitSerializer, responses={200: SPLIT_COUNTS, **errors(400, 403, 404)})
    @action(detail=True, methods=["post"])
    def split(self, request, name=None):
        dataset = self.get_object()
        data = SplitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = form_validated(SplitForm(data.validated_data))
        counts = services.dataset_split(
            dataset=dataset, seed=d["seed"], fractions=(d["train"], d["val"], d["test"])
        )
        return Response({"counts": counts}, status=status.HTTP_200_OK)
