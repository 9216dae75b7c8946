"""Reachability of the task broker, checked before anything is queued."""

from __future__ import annotations

from fairskin.errors import ApplicationError


class BrokerUnavailable(ApplicationError):
    """The Celery broker cannot be reached; nothing was queued."""

    status = 503


def broker_check(timeout: float = 3.0) -> None:
    """Raise BrokerUnavailable unless a connection to the broker can be opened now."""
    from celery import current_app as app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:
        url = _redacted(app.conf.broker_write_url or app.conf.broker_url)
        reason = str(exc).rstrip(". ")  # redis-py's messages end with a full stop already
        raise BrokerUnavailable(
            f"The task broker ({url}) is unreachable: {reason}. "
            "Nothing was queued; try again once it is back."
        ) from exc


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if rest else url
