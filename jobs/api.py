"""The jobs API: a job's state and progress, to poll long work that another operation queued,
and cancel/resume as the jobs page offers them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from common.api import ActionPermissions, errors, has_perm
from jobs import services
from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    terminal = serializers.BooleanField(source="is_terminal", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "title",
            "queue",
            "state",
            "terminal",
            "attempt",
            "cancel_requested",
            "progress_done",
            "progress_total",
            "progress_phase",
            "progress_message",
            "error",
            "result",
            "created_at",
            "started_at",
            "finished_at",
        ]


class JobMessageSerializer(serializers.Serializer):
    detail = serializers.CharField()
    job = JobSerializer()


def job_answer(job: Job, status: int = 202) -> Response:
    """What an operation that queued work answers: the job to poll at /api/jobs/{id}/."""
    return Response(JobSerializer(job).data, status=status)


@extend_schema_view(
    list=extend_schema(responses={200: JobSerializer(many=True), **errors(403)}),
    retrieve=extend_schema(responses={200: JobSerializer, **errors(403, 404)}),
)
class JobViewSet(ActionPermissions, viewsets.ReadOnlyModelViewSet):
    """Jobs, newest first (the last 100): poll one until ``terminal`` is true."""

    serializer_class = JobSerializer
    permission_classes = [permissions.IsAuthenticated, has_perm("jobs.view_job")]
    queryset = Job.objects.order_by("-created_at", "-pk")

    action_perms = dict.fromkeys(["cancel", "resume"], "jobs.control_job")

    def list(self, request, *args, **kwargs):
        return Response(JobSerializer(self.get_queryset()[:100], many=True).data)

    def _control(self, service) -> Response:
        job = self.get_object()
        message = service(job=job, by=self.request.user)
        job.refresh_from_db()
        return Response({"detail": message, "job": JobSerializer(job).data})

    @extend_schema(
        request=None, responses={200: JobMessageSerializer, **errors(400, 403, 404, 409)}
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._control(services.job_user_cancel)

    @extend_schema(
        request=None,
        responses={200: JobMessageSerializer, **errors(400, 403, 404, 409, 503)},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._control(services.job_user_resume)
