from django.core.management.base import BaseCommand

from accounts.permissions import migration_role_permissions, sync_role_groups


class Command(BaseCommand):
    help = (
        "Re-create the dermatologist, lead and engineer groups with exactly the permissions "
        "the apps' migrations grant them (repairs hand-edited groups)."
    )

    def handle(self, *args, **options):
        sync_role_groups()
        for role, names in sorted(migration_role_permissions().items()):
            self.stdout.write(f"{role}: {len(names)} permission(s)")
