"""Every URL the app has, for every role: who gets in and who is turned away.

A URL that is not in the table fails the test, so every new page must be classified here.
"""

import pytest
from django.conf import settings
from django.contrib import admin
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from fairskin.review.gate import GateCriteria
from jobs.models import Job, JobState
from review.models import Assignment, Release, Study, StudyItem, StudyRater, StudyState
from tests.factories import (
    BatchFactory,
    ImageFactory,
    JobFactory,
    RunFactory,
    SampleFactory,
    image_bytes,
    make_user,
)

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "dermatologist", "lead", "engineer")
LOGIN = "login"  # a redirect to the login page

# name -> (method, kwargs builder key, expected status per role)
MATRIX = {
    "accounts:home": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "accounts:login": (
        "get",
        None,
        {"anonymous": 200, "dermatologist": 302, "lead": 302, "engineer": 302},
    ),
    "accounts:logout": ("post", None, {r: 302 for r in ROLES}),
    # Everyone signed in has an account page; a dermatologist's says tokens are not for them.
    "accounts:account": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "health": ("get", None, {r: 200 for r in ROLES}),
    "jobs:list": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "jobs:detail": (
        "get",
        "job",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "jobs:live": (
        "get",
        "job",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "jobs:cancel": (
        "post",
        "job",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    "jobs:resume": (
        "post",
        "failed_job",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    "catalog:datasets": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "catalog:dataset": (
        "get",
        "dataset",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "catalog:images": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "catalog:thumbnail": (
        "get",
        "image",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "training:runs": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "training:run": (
        "get",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "training:live": (
        "get",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "training:grid": (
        "get",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 404, "engineer": 404},
    ),
    "training:artifact": (  # the factory's run has no files: 404 once allowed in
        "get",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 404, "engineer": 404},
    ),
    "training:fairness": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "training:fairness_export": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 404, "engineer": 404},
    ),
    "training:confidence_model": (
        "post",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    "generation:batches": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "generation:batch": (
        "get",
        "batch",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "generation:live": (
        "get",
        "batch",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "generation:export": (
        "get",
        "batch",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    # A finished batch cannot be cancelled or resumed: the engineer gets the reason back.
    "generation:cancel": (
        "post",
        "batch",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    "generation:resume": (
        "post",
        "batch",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    # Launching batches is the engineer's; the factory's run is no classifier: the page says so.
    "generation:hard_examples": (
        "get",
        "run",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 200},
    ),
    "generation:sample": (
        "get",
        "sample",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "generation:image": (
        "get",
        "sample",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "generation:thumb": (
        "get",
        "sample",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "jobs:worker_check": (
        "post",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 403, "engineer": 302},
    ),
    # Review: dermatologists never see studies, gates or releases; only leads decide.
    "review:studies": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "review:study_new": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 403},
    ),
    "review:study": (
        "get",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "review:live": (
        "get",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    # The study is already closed (and its gate empty): the lead is let in and told why not.
    "review:close": (
        "post",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 302, "engineer": 403},
    ),
    "review:approve": (
        "post",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 302, "engineer": 403},
    ),
    "review:reject": (
        "post",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 302, "engineer": 403},
    ),
    # A closed study's preparation cannot be resumed, nor an unfailed export: the lead is let
    # in and told why not.
    "review:preparation": (
        "post",
        "study",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 302, "engineer": 403},
    ),
    "review:export_resume": (
        "post",
        "release",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 302, "engineer": 403},
    ),
    "review:release": (
        "get",
        "release",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "review:release_live": (
        "get",
        "release",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "review:download": (
        "get",
        "release",
        {"anonymous": LOGIN, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    # Rating: the signed-in user holds a seat in an open study (anonymous: a dermatologist
    # does). Even seated, only a dermatologist rates; an image token of anyone else is unknown.
    "review:rate": (
        "get",
        "seat",
        {"anonymous": LOGIN, "dermatologist": 200, "lead": 403, "engineer": 403},
    ),
    "review:image": (
        "get",
        "token",
        {"anonymous": LOGIN, "dermatologist": 200, "lead": 404, "engineer": 404},
    ),
    # The API: session authentication answers 403, not a login redirect, to anonymous callers.
    "api:api-root": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "api:schema": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "api:docs": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "api:study-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:study-detail": (
        "get",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:study-progress": (
        "get",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:study-gate": (
        "get",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:release-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:release-detail": (
        "get",
        "release",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:queue": (
        "get",
        "seat",
        {"anonymous": 403, "dermatologist": 200, "lead": 403, "engineer": 403},
    ),
    "api:ratings": (
        "post",
        "rating",
        {"anonymous": 403, "dermatologist": 201, "lead": 403, "engineer": 403},
    ),
    # The API's operations for engineers and leads (each also takes an API token, tested in
    # tests/api): the same rights as the pages. An allowed POST without its data is a 400;
    # one the object's state refuses is a 400 (cancel a finished batch) or a 409 (resume a
    # queued run's job).
    "api:dataset-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:dataset-detail": (
        "get",
        "dataset",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:dataset-preprocess": (
        "post",
        "dataset",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 202},
    ),
    "api:dataset-split": (
        "post",
        "dataset",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 200},
    ),
    "api:run-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:run-detail": (
        "get",
        "run",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:run-cancel": (
        "post",
        "run",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 200},
    ),
    "api:run-resume": (
        "post",
        "run",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 409},
    ),
    "api:run-artifact": (
        "get",
        "run",
        {"anonymous": 403, "dermatologist": 403, "lead": 404, "engineer": 404},
    ),
    "api:batch-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:batch-detail": (
        "get",
        "batch",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:batch-cancel": (
        "post",
        "batch",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 400},
    ),
    "api:batch-resume": (
        "post",
        "batch",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 400},
    ),
    "api:batch-samples": (
        "get",
        "batch",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:batch-export": (
        "get",
        "batch",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:job-list": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:job-detail": (
        "get",
        "job",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:job-cancel": (
        "post",
        "job",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 200},
    ),
    "api:job-resume": (
        "post",
        "failed_job",
        {"anonymous": 403, "dermatologist": 403, "lead": 403, "engineer": 200},
    ),
    "api:study-close": (
        "post",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 400, "engineer": 403},
    ),
    "api:study-approve": (
        "post",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 400, "engineer": 403},
    ),
    "api:study-reject": (
        "post",
        "study",
        {"anonymous": 403, "dermatologist": 403, "lead": 400, "engineer": 403},
    ),
    "api:release-download": (
        "get",
        "release",
        {"anonymous": 403, "dermatologist": 403, "lead": 200, "engineer": 200},
    ),
    "api:fairness": (
        "get",
        None,
        {"anonymous": 403, "dermatologist": 403, "lead": 404, "engineer": 404},
    ),
    # Every signed-in user has notifications and their settings; mark read touches one's own.
    "notifications:preferences": (
        "get",
        None,
        {"anonymous": LOGIN, "dermatologist": 200, "lead": 200, "engineer": 200},
    ),
    "notifications:read": (
        "post",
        "notification",
        {"anonymous": LOGIN, "dermatologist": 302, "lead": 302, "engineer": 302},
    ),
    "notifications:read_all": (
        "post",
        None,
        {"anonymous": LOGIN, "dermatologist": 302, "lead": 302, "engineer": 302},
    ),
}


def _named_urls(patterns, namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # the admin is covered model by model below
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from _named_urls(p.url_patterns, ns)
        elif isinstance(p, URLPattern) and p.name:
            yield f"{namespace}{p.name}"


def test_every_url_is_classified():
    assert set(_named_urls(get_resolver().url_patterns)) == set(MATRIX)


def _study(state: str) -> Study:
    return Study.objects.create(
        batch=BatchFactory(state="finished"),
        seed=1,
        state=state,
        instructions="Rate each image.",
        criteria=GateCriteria().to_dict(),
    )


def _seated(user) -> Assignment:
    """An item of an open study assigned to `user` (a dermatologist when there is none)."""
    rater = user or make_user("dermatologist")
    study = _study(StudyState.OPEN)
    StudyRater.objects.create(study=study, rater=rater, index=0)
    item = StudyItem(study=study, image=ImageFactory(), origin="synthetic", diagnosis="MEL", fst=5)
    item.derivative.save("x.jpg", ContentFile(image_bytes("JPEG")))
    return Assignment.objects.create(study=study, rater=rater, item=item, position=0)


def _release() -> Release:
    study = _study(StudyState.CLOSED)
    export = settings.FAIRSKIN_ARTIFACTS_ROOT / f"matrix-release-{study.pk}.zip"
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    return Release.objects.create(
        study=study,
        batch=study.batch,
        approved_by=make_user("lead"),
        manifest={"images": []},
        manifest_sha256="0" * 64,
        gate={},
        criteria_version=1,
        image_count=0,
        export_path=str(export),
    )


def _notification(user):
    from notifications.models import Notification

    return Notification.objects.create(
        recipient=user, kind="job_failed", object_key="job:1", occurrence="attempt:1"
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_role_by_url(client, role, name):
    method, kwargs_key, expected = MATRIX[name]
    user = None if role == "anonymous" else make_user(role)
    kwargs, data = {}, {}
    if kwargs_key == "job":
        kwargs = {"job_id": JobFactory().pk}
    elif kwargs_key == "failed_job":
        kwargs = {"job_id": JobFactory(state=JobState.FAILED).pk}
    elif kwargs_key == "dataset":
        kwargs = {"name": ImageFactory().dataset.name}
    elif kwargs_key == "run":
        kwargs = {"run_id": RunFactory().pk}
    elif kwargs_key == "batch":
        kwargs = {"batch_id": BatchFactory(state="finished").pk}
    elif kwargs_key == "sample":
        kwargs = {"sample_id": SampleFactory().pk}
    elif kwargs_key == "image":
        kwargs = {"image_id": ImageFactory(with_thumbnail=True).pk}
    elif kwargs_key == "study":
        kwargs = {"study_id" if name.startswith("review:") else "pk": _study(StudyState.CLOSED).pk}
    elif kwargs_key == "release":
        kwargs = {"release_id" if name.startswith("review:") else "pk": _release().pk}
    elif kwargs_key == "seat":
        kwargs = {"study_id": _seated(user).study_id}
    elif kwargs_key == "token":
        kwargs = {"token": _seated(user).token}
    elif kwargs_key == "rating":
        data = {"token": _seated(user).token, "score": 6, "seconds": 2.5}
    elif kwargs_key == "notification":
        recipient = user or make_user("engineer")
        kwargs = {"notification_id": _notification(recipient).pk}
    if name.startswith("api:"):  # the API's routes name the object's key pk
        kwargs = {
            ("pk" if key in ("run_id", "batch_id", "job_id") else key): value
            for key, value in kwargs.items()
        }
    if name == "api:run-artifact":
        data = {"name": "manifest.json"}
    if name == "review:preparation":
        kwargs["action"] = "resume"
    if name == "training:artifact":
        kwargs["name"] = "manifest.json"
    url = reverse(name, kwargs=kwargs)
    if name == "jobs:worker_check":
        data = {"queue": "cpu", "steps": 1, "pause_s": 0}
    if user is not None:
        client.force_login(user)
    response = getattr(client, method)(url, data)
    response.close()  # a file download streams from an open file
    want = expected[role]
    if want == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("accounts:login"))
    else:
        assert response.status_code == want, response.content[:300]


def _admin_urls():
    urls = [
        reverse("admin:index"),
        reverse("admin:catalog_dataset_import"),
        reverse("admin:catalog_dataset_split"),
        reverse("admin:training_run_launch"),
        reverse("admin:generation_batch_launch"),
    ]
    for model in admin.site._registry:
        opts = model._meta
        urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        urls.append(reverse("admin:app_list", kwargs={"app_label": opts.app_label}))
    return sorted(set(urls))


@pytest.mark.parametrize("url", _admin_urls())
def test_dermatologists_never_reach_the_admin_even_as_staff(client, url):
    derm = make_user("dermatologist")
    derm.is_staff = True  # even a misconfigured account stays out
    derm.save()
    client.force_login(derm)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", _admin_urls())
def test_anonymous_admin_access_goes_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and "login" in response["Location"]


def test_engineer_reaches_job_admin_and_lead_sees_only_what_leads_need(client):
    client.force_login(make_user("engineer"))
    assert client.get(reverse("admin:jobs_job_changelist")).status_code == 200
    client.force_login(make_user("lead"))
    assert client.get(reverse("admin:jobs_job_changelist")).status_code == 200
    assert client.get(reverse("admin:jobs_joblogentry_changelist")).status_code == 403
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_engineer_cancel_through_the_page_cancels_the_job(client):
    client.force_login(make_user("engineer"))
    job = JobFactory()
    client.post(reverse("jobs:cancel", kwargs={"job_id": job.pk}))
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED
