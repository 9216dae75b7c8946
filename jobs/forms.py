from django import forms

from jobs.models import Queue
from jobs.work import WORKER_CHECK_MAX_PAUSE, WORKER_CHECK_MAX_STEPS


class WorkerCheckForm(forms.Form):
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.CPU)
    steps = forms.IntegerField(min_value=1, max_value=WORKER_CHECK_MAX_STEPS, initial=10)
    pause_s = forms.FloatField(
        min_value=0, max_value=WORKER_CHECK_MAX_PAUSE, initial=0.2, label="Pause per step (s)"
    )
