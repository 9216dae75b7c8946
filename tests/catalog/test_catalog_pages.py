import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Dataset, Image
from jobs.models import Job
from jobs.runner import execute_job
from tests.factories import DatasetFactory, ImageFactory, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def engineer_client(client):
    client.force_login(make_user("engineer"))
    return client


def test_dataset_page_shows_the_count_table_and_chart(engineer_client):
    dataset = DatasetFactory(name="skin")
    ImageFactory(dataset=dataset, diagnosis="DF", fst_low=2, fst_high=2)
    ImageFactory(
        dataset=dataset,
        diagnosis="MEL",
        fst_low=None,
        fst_high=None,
        fst_source="",
        missing_file=True,
    )
    page = engineer_client.get(reverse("catalog:dataset", kwargs={"name": "skin"}))
    html = page.content.decode()
    assert page.status_code == 200
    assert '<span class="figure" data-testid="image-count">2</span>' in html
    assert '<span class="figure" data-testid="missing-count">1</span>' in html
    assert "<svg" in html and "DF · II: 1" in html  # a chart segment with its tooltip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"fst": "6"}, {"exact6", "range56"}),
        ({"fst": "5"}, {"range56"}),
        ({"diagnosis": "NV"}, {"nv"}),
        ({"origin": "synthetic"}, {"synthetic"}),
        ({"split": "test"}, {"nv"}),
        ({"split": ""}, {"exact6", "range56", "synthetic"}),
        ({"dataset": "other"}, {"synthetic"}),
    ],
)
def test_image_browser_filters(engineer_client, query, expected):
    real = DatasetFactory(name="real")
    ImageFactory(dataset=real, source_id="exact6", fst_low=6, fst_high=6)
    ImageFactory(dataset=real, source_id="range56", fst_low=5, fst_high=6)
    ImageFactory(dataset=real, source_id="nv", diagnosis="NV", split="test")
    ImageFactory(dataset=DatasetFactory(name="other"), source_id="synthetic", origin="synthetic")
    page = engineer_client.get(reverse("catalog:images"), query)
    shown = {img.source_id for img in page.context["page"]}
    assert shown == expected


def test_thumbnail_is_served_to_engineers_only(client):
    image = ImageFactory(with_thumbnail=True)
    url = reverse("catalog:thumbnail", kwargs={"image_id": image.pk})
    client.force_login(make_user("dermatologist"))
    assert client.get(url).status_code == 403
    client.force_login(make_user("engineer"))
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"


def test_admin_upload_refuses_a_malformed_csv_on_the_form(engineer_client):
    bad = SimpleUploadedFile("meta.csv", b"file,diagnosis,fst\na.png,MEL,9\n")
    page = engineer_client.post(
        reverse("admin:catalog_dataset_import"),
        {"format": "csv", "mapping": "strict", "metadata": bad},
    )
    assert page.status_code == 200
    assert "fst" in page.content.decode() and "row 1" in page.content.decode()
    assert Job.objects.count() == 0 and Dataset.objects.count() == 0


def test_admin_upload_queues_an_import_job_that_creates_the_dataset(
    engineer_client, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    csv = SimpleUploadedFile("meta.csv", b"file,diagnosis,fst\na.png,MEL,4\nb.png,DF,6\n")
    with django_capture_on_commit_callbacks(execute=False):
        response = engineer_client.post(
            reverse("admin:catalog_dataset_import"),
            {"format": "csv", "name": "uploaded", "mapping": "strict", "metadata": csv},
        )
    job = Job.objects.get(kind="catalog.import")
    assert response.status_code == 302 and response["Location"].endswith(f"/jobs/{job.pk}/")
    assert execute_job(job_id=job.pk) == "succeeded"
    assert Image.objects.filter(dataset__name="uploaded").count() == 2
    assert not any(tmp_path.joinpath("uploads").rglob("*.csv"))  # the upload was cleaned up


def test_lead_cannot_import(client):
    client.force_login(make_user("lead"))
    assert client.get(reverse("admin:catalog_dataset_import")).status_code == 403
