"""Writes on user accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from accounts.roles import STAFF_ROLES, Role


def user_create(
    *,
    username: str,
    role: Role | str,
    password: str,
    email: str = "",
    validate: bool = True,
) -> AbstractUser:
    """Create a user holding exactly one role. Raises ValueError or ValidationError."""
    role = Role(role)
    User = get_user_model()
    if not username or User.objects.filter(username=username).exists():
        raise ValueError(f"user {username!r} already exists" if username else "username is empty")
    user = User(username=username, email=email, is_staff=role in STAFF_ROLES)
    if validate:
        validate_password(password, user)
    with transaction.atomic():
        user.set_password(password)
        user.save()
        user.groups.set([Group.objects.get(name=role.value)])
    return user
