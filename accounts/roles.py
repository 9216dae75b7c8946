"""The three roles. Each is a Django group whose permissions the migrations maintain."""

from __future__ import annotations

import enum

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class Role(enum.StrEnum):
    DERMATOLOGIST = "dermatologist"
    LEAD = "lead"
    ENGINEER = "engineer"


# Staff status (admin access) follows the role; dermatologists never get it.
STAFF_ROLES = frozenset({Role.LEAD, Role.ENGINEER})

# If a user were ever in several groups, the most restrictive role wins: a rater must stay
# blind even if someone also made them a lead.
_PRECEDENCE = (Role.DERMATOLOGIST, Role.LEAD, Role.ENGINEER)


def user_role(user: AbstractBaseUser | AnonymousUser) -> Role | None:
    if not user.is_authenticated:
        return None
    cached = getattr(user, "_fairskin_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))
    role = next((r for r in _PRECEDENCE if r.value in names), None)
    user._fairskin_role = role
    return role
