"""The three roles. Each is a Django group whose permissions the migrations maintain."""

from __future__ import annotations

import enum

from django.contrib.auth.models import AbstractUser, AnonymousUser


class Role(enum.StrEnum):
    DERMATOLOGIST = "dermatologist"
    LEAD = "lead"
    ENGINEER = "engineer"


# Staff status (admin access) follows the role; dermatologists never get it.
STAFF_ROLES = frozenset({Role.LEAD, Role.ENGINEER})

# If a user were ever in several groups, the most restrictive role wins: a rater must stay
# blind even if someone also made them a lead.
_PRECEDENCE = (Role.DERMATOLOGIST, Role.LEAD, Role.ENGINEER)

# The role is kept on the user object, so a request asks the database once.
_CACHED_ROLE = "_fairskin_role"


def user_role(user: AbstractUser | AnonymousUser) -> Role | None:
    if not user.is_authenticated:
        return None
    if hasattr(user, _CACHED_ROLE):
        cached: Role | None = getattr(user, _CACHED_ROLE)
        return cached
    names = set(user.groups.values_list("name", flat=True))
    role = next((r for r in _PRECEDENCE if r.value in names), None)
    setattr(user, _CACHED_ROLE, role)
    return role
