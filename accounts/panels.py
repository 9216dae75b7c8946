"""Home-page panels: each app shows its own part of a role's home page.

accounts owns the page's frame (title, heading, layout) and imports no app. An app registers
the panels that show its work in its ``AppConfig.ready()``; the home view renders, in order,
the panels registered for the user's role. Later work (studies, releases, notifications) adds
a panel from its own app instead of teaching accounts about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from accounts.roles import Role

PanelContext = Callable[[HttpRequest], Mapping[str, Any]]


@dataclass(frozen=True)
class Panel:
    role: Role
    order: int  # lower first; leave gaps so another app can slot in between
    template: str
    context: PanelContext | None = None


# Keyed by (role, template): registering the same panel again replaces it instead of
# showing it twice (ready() may run more than once, e.g. in tests that reload apps).
_registry: dict[tuple[Role, str], Panel] = {}


def register_panel(
    *, role: Role | str, order: int, template: str, context: PanelContext | None = None
) -> Panel:
    """Show ``template`` on ``role``'s home page, with the context ``context(request)``."""
    panel = Panel(role=Role(role), order=order, template=template, context=context)
    _registry[(panel.role, panel.template)] = panel
    return panel


def panels_for(*, role: Role) -> list[Panel]:
    return sorted(
        (p for p in _registry.values() if p.role is role), key=lambda p: (p.order, p.template)
    )


def panels_render(*, role: Role, request: HttpRequest) -> list[SafeString]:
    """Each of the role's panels rendered on its own, so no panel sees another's context."""
    return [
        render_to_string(
            panel.template, dict(panel.context(request)) if panel.context else {}, request=request
        )
        for panel in panels_for(role=role)
    ]
