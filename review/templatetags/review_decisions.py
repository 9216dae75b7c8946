"""A batch's review outcome on the generation app's batch page: ``{% batch_review batch %}``.

The batch page belongs to generation, which knows nothing of review; the review app lends the
part that shows whether the batch was released or rejected, as it lends panels to home pages.
"""

from __future__ import annotations

from typing import Any

from django import template

from review.selectors import batch_decision

register = template.Library()


@register.inclusion_tag("review/_batch_decision.html", takes_context=True)
def batch_review(context: template.Context, batch: Any) -> dict[str, Any]:
    return {
        "batch": batch,
        "perms": context.get("perms"),
        **batch_decision(batch_id=batch.pk),
    }
