"""Helpers for data migrations that give roles their permissions.

Each app grants its own permissions to the role groups in one of its migrations, so a role's
rights are created with the models they concern and can be read in the migration history.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions


def ensure_permissions(apps) -> None:
    """Create permission rows now: Django otherwise adds them only after all migrations."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None


def grant(apps, role_permissions: dict[str, list[str]]) -> None:
    """Give each role group the listed ``app_label.codename`` permissions."""
    ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in role_permissions.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def migration_role_permissions() -> dict[str, set[str]]:
    """Every role's permissions as the apps' migrations grant them (their ROLE_PERMISSIONS)."""
    import importlib
    import pkgutil

    from django.apps import apps as registry

    table: dict[str, set[str]] = {}
    for app_config in registry.get_app_configs():
        try:
            package = importlib.import_module(f"{app_config.name}.migrations")
        except ModuleNotFoundError:
            continue
        for module_info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{module_info.name}")
            for role, names in getattr(module, "ROLE_PERMISSIONS", {}).items():
                table.setdefault(role, set()).update(names)
    return table


def sync_role_groups() -> None:
    """Re-create the role groups with their permissions (after a database flush, or to repair
    a group someone edited by hand). Permission rows must exist (post_migrate creates them)."""
    from django.contrib.auth.models import Group, Permission

    for role, names in migration_role_permissions().items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = []
        for name in sorted(names):
            app_label, codename = name.split(".")
            perms.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(perms)
