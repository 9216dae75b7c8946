from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.roles import Role
from accounts.services import user_create

DEMO_ACCOUNTS = [
    ("derm1", Role.DERMATOLOGIST),
    ("derm2", Role.DERMATOLOGIST),
    ("derm3", Role.DERMATOLOGIST),
    ("lead", Role.LEAD),
    ("engineer", Role.ENGINEER),
]
DEMO_PASSWORD_SUFFIX = "-fairskin-demo"  # noqa: S105 (printed demo credentials)


class Command(BaseCommand):
    help = "Create the demo accounts (three dermatologists, a lead, an engineer) if missing."

    def handle(self, *args, **options):
        User = get_user_model()
        rows = []
        for username, role in DEMO_ACCOUNTS:
            password = f"{username}{DEMO_PASSWORD_SUFFIX}"
            if not User.objects.filter(username=username).exists():
                # A reserved domain: under make run, notification mails print to the console.
                user_create(
                    username=username,
                    role=role,
                    password=password,
                    email=f"{username}@fairskin.localhost",
                    validate=False,
                )
            rows.append((role.value, username, password))
        self.stdout.write("Demo accounts (local use only; change them before exposing the app):")
        for role_name, username, password in rows:
            self.stdout.write(f"  {role_name:<14} {username:<9} password: {password}")
