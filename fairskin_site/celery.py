"""The Celery app. Workers consume the ``gpu`` and ``cpu`` queues; see settings for policy."""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fairskin_site.settings")

app = Celery("fairskin")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue has its own exchange and key: a GPU job must never reach a CPU-only worker.
# gpu-x2 ... gpu-x8: training runs on that many data-parallel processes (jobs.models.Queue).
QUEUES = ("gpu", "cpu", *(f"gpu-x{n}" for n in range(2, 9)))
app.conf.task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUES)
app.conf.task_default_exchange = "cpu"
app.conf.task_default_routing_key = "cpu"
app.autodiscover_tasks()
