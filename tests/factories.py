import itertools

import factory

from accounts.services import user_create
from jobs.models import Job

PASSWORD = "correct-horse-battery-staple"
_numbers = itertools.count(1)


def make_user(role: str, username: str | None = None):
    """A user with one role, made through the same service as `manage.py create_user`."""
    name = username or f"{role}{next(_numbers)}"
    return user_create(username=name, role=role, password=PASSWORD, validate=False)


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    kind = "worker_check"
    queue = "cpu"
    params = factory.LazyFunction(lambda: {"steps": 2, "pause_s": 0})
