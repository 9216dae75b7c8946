import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.roles import Role, user_role
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db


def login(client, username, password):
    return client.post(reverse("accounts:login"), {"username": username, "password": password})


@pytest.mark.parametrize(
    ("role", "heading"),
    [
        ("dermatologist", "Your rating assignments"),
        ("lead", "Lead overview"),
        ("engineer", "Engineering"),
    ],
)
def test_each_role_lands_on_its_home_page(client, role, heading):
    user = make_user(role)
    response = login(client, user.username, PASSWORD)
    assert response.status_code == 302 and response["Location"] == reverse("accounts:home")
    page = client.get(reverse("accounts:home")).content.decode()
    assert heading in page
    if role == "dermatologist":
        assert "Admin" not in page and "Jobs" not in page


def test_login_is_throttled_after_repeated_failures(client, settings):
    user = make_user("lead")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, user.username, "wrong").status_code == 200
    assert login(client, user.username, "wrong").status_code == 429  # the limit-th failure
    locked = login(client, user.username, PASSWORD)  # even the right password now
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_without_csrf_token_is_refused():
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    user = make_user("engineer")
    response = client.post(
        reverse("accounts:login"), {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_logout_requires_post(client):
    client.force_login(make_user("engineer"))
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert "_auth_user_id" not in client.session


def test_create_user_command_gives_exactly_one_role(monkeypatch):
    monkeypatch.setenv("NEW_PW", "a-long-unusual-passphrase-42")
    call_command("create_user", "drsmith", "--role", "dermatologist", "--password-env", "NEW_PW")
    user = get_user_model().objects.get(username="drsmith")
    assert user_role(user) is Role.DERMATOLOGIST
    assert not user.is_staff
    assert user.check_password("a-long-unusual-passphrase-42")


def test_create_user_refuses_duplicates_weak_passwords_and_unknown_roles(monkeypatch):
    monkeypatch.setenv("WEAK", "password")
    monkeypatch.setenv("GOOD", "a-long-unusual-passphrase-42")
    with pytest.raises(CommandError, match="too common"):
        call_command("create_user", "x1", "--role", "lead", "--password-env", "WEAK")
    call_command("create_user", "x2", "--role", "lead", "--password-env", "GOOD")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "x2", "--role", "lead", "--password-env", "GOOD")
    with pytest.raises(CommandError):
        call_command("create_user", "x3", "--role", "admin", "--password-env", "GOOD")
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["x2"]


def test_seed_accounts_is_idempotent_and_prints_credentials(capsys):
    call_command("seed_accounts")
    call_command("seed_accounts")
    out = capsys.readouterr().out
    assert "derm1-fairskin-demo" in out
    roles = {u.username: user_role(u) for u in get_user_model().objects.all()}
    assert roles == {
        "derm1": Role.DERMATOLOGIST,
        "derm2": Role.DERMATOLOGIST,
        "derm3": Role.DERMATOLOGIST,
        "lead": Role.LEAD,
        "engineer": Role.ENGINEER,
    }


def test_role_groups_carry_their_permissions():
    engineer, lead, derm = (make_user(r) for r in ("engineer", "lead", "dermatologist"))
    assert engineer.has_perms(["jobs.view_job", "jobs.launch_job", "jobs.control_job"])
    assert lead.has_perm("jobs.view_job") and not lead.has_perm("jobs.control_job")
    # Dermatologists may rate what is assigned to them, and nothing else.
    assert derm.get_all_permissions() == {"review.rate_study"}
