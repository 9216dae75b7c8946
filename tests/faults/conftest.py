"""Fixtures shared by the fault scenarios: a private Redis the test may stop and start."""

from __future__ import annotations

import kombu.pools
import pytest

from tests.faults.processes import PrivateRedis


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    broker = PrivateRedis(tmp_path_factory.mktemp("redis") / "redis.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(private_redis):
    """The private Redis, running and empty at the start of the test."""
    private_redis.start()
    private_redis.client().flushall()
    return private_redis


@pytest.fixture
def app_on_private_broker(broker, settings):
    """Point this process' Celery app (and the setting) at the private Redis, with fresh
    connection pools, so the real broker check and the real send both go there."""
    from fairskin_site.celery import app

    def reset_pools():
        kombu.pools.reset()  # closes and forgets every pool, keyed by broker URL
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None

    saved = (app.conf.broker_url, app.conf.broker_write_url, app.conf.broker_read_url)
    settings.CELERY_BROKER_URL = broker.url
    reset_pools()
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = broker.url
    yield broker
    reset_pools()
    app.conf.broker_url, app.conf.broker_write_url, app.conf.broker_read_url = saved
