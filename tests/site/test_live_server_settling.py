"""The live-server tests' teardown helper: a request still in flight finishes before the
flush; a session stuck holding locks is ended; an idle one is left alone."""

import threading
import time

import psycopg
import pytest
from django.db import connection

from tests.conftest import settle_other_sessions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres():
    if connection.vendor != "postgresql":
        pytest.skip("about PostgreSQL's sessions and locks")


def other_session() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"], port=s["PORT"] or 5432, user=s["USER"], dbname=s["NAME"], autocommit=True
    )


def test_a_query_in_flight_finishes_and_is_not_ended():
    busy = other_session()
    result: list[object] = []

    def query():
        result.append(busy.execute("SELECT pg_sleep(0.4), 1").fetchone())

    pid = busy.info.backend_pid
    thread = threading.Thread(target=query)
    thread.start()
    try:
        # Only once the query is running (else the helper would find nothing to wait for).
        with connection.cursor() as cursor:
            for _ in range(200):
                cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
                if cursor.fetchone() == ("active",):
                    break
                time.sleep(0.005)
        started = time.monotonic()
        ended = settle_other_sessions(wait=10)
        waited = time.monotonic() - started
    finally:
        thread.join()
    assert ended == []
    assert result and result[0][1] == 1
    # It waited for the running query (0.4 s, just started) instead of returning at once.
    assert waited > 0.2
    busy.close()


def test_a_session_holding_locks_is_ended_and_an_idle_one_is_not():
    stuck = other_session()
    idle = other_session()
    stuck.execute("BEGIN")
    stuck.execute("LOCK TABLE catalog_image IN ACCESS SHARE MODE")
    stuck_pid = stuck.info.backend_pid
    ended = settle_other_sessions(wait=0.2)
    assert ended == [stuck_pid]
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("SELECT 1")
    assert idle.execute("SELECT 2").fetchone() == (2,)
    # The lock is gone: a truncate (what the flush runs) does not wait for it.
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '2s'")
        cursor.execute("TRUNCATE catalog_image CASCADE")
        cursor.execute("RESET lock_timeout")
    idle.close()
