"""The Celery app. Workers consume the ``gpu`` and ``cpu`` queues; see settings for policy."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fairskin_site.settings")

app = Celery("fairskin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("gpu"), Queue("cpu"))
app.autodiscover_tasks()
