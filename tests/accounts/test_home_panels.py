"""The home pages are composed of the panels each app registers (accounts.panels)."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts import panels
from accounts.roles import Role
from review.models import Study, StudyRater
from tests.factories import BatchFactory, JobFactory, make_user


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(panels, "_registry", {})


def test_panels_for_keeps_the_roles_panels_in_order(empty_registry):
    panels.register_panel(role=Role.LEAD, order=90, template="b.html")
    panels.register_panel(role="lead", order=10, template="a.html")
    panels.register_panel(role=Role.ENGINEER, order=50, template="c.html")
    assert [p.template for p in panels.panels_for(role=Role.LEAD)] == ["a.html", "b.html"]
    assert [p.template for p in panels.panels_for(role=Role.DERMATOLOGIST)] == []


def test_registering_a_panel_again_replaces_it(empty_registry):
    panels.register_panel(role=Role.LEAD, order=10, template="a.html")
    panels.register_panel(role=Role.LEAD, order=20, template="a.html")
    assert [p.order for p in panels.panels_for(role=Role.LEAD)] == [20]


def test_an_unknown_role_is_refused(empty_registry):
    with pytest.raises(ValueError):
        panels.register_panel(role="auditor", order=10, template="a.html")


def page_of(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("accounts:home"))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_a_dermatologist_sees_only_their_own_studies(client):
    rater, other = make_user("dermatologist"), make_user("dermatologist")
    batch = BatchFactory()
    for user, name in ((rater, "Mine"), (other, "Theirs")):
        study = Study.objects.create(
            batch=batch, name=name, seed=1, instructions="Rate.", criteria={}, state="open"
        )
        StudyRater.objects.create(study=study, rater=user, index=0)
    page = page_of(client, rater)
    mine = Study.objects.get(name="Mine")
    assert "Your rating assignments" in page and f"Mine #{mine.pk}" in page
    assert "Theirs" not in page and page.count('data-testid="assignment"') == 1


@pytest.mark.django_db
def test_a_leads_page_shows_synthetic_data_then_recent_jobs(client):
    job = JobFactory(title="Nightly check")
    page = page_of(client, make_user("lead"))
    assert page.index("Synthetic data") < page.index("Recent jobs") < page.index("Nightly check")
    assert reverse("jobs:detail", args=[job.pk]) in page
    assert "All jobs →" in page and "Start here" not in page


@pytest.mark.django_db
@pytest.mark.parametrize("superuser", [False, True])
def test_an_engineers_page_starts_with_the_links_then_recent_jobs(client, superuser):
    JobFactory(title="Nightly check")
    user = (
        get_user_model().objects.create_superuser("root", "root@example.org", "pw")
        if superuser
        else make_user("engineer")
    )
    page = page_of(client, user)
    assert page.index("Start here") < page.index("Recent jobs") < page.index("Nightly check")
    assert "Synthetic data" not in page and "All jobs →" not in page
    assert "Your rating assignments" not in page
