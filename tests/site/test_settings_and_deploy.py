"""Settings come from the environment; production settings pass Django's deploy checks."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k3J9-production-like-secret-with-enough-entropy-qZ8vW2xL5nR7tY1uP4sA6dF0",
    "ALLOWED_HOSTS": "fairskin.example.org",
    "DATABASE_URL": "postgres://fairskin:pw@db.example.org:5432/fairskin",
    "CELERY_BROKER_URL": "redis://redis.example.org:6379/0",
}


def run_manage(*args, env_overrides):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SECRET_KEY",
            "DEBUG",
            "SECURE_SSL_REDIRECT",
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "DJANGO_SETTINGS_MODULE",
        }
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION_ENV
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_debug_and_insecure_cookies():
    insecure = {**PRODUCTION_ENV, "DEBUG": "1", "SESSION_COOKIE_SECURE": "0"}
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=insecure)
    assert result.returncode != 0
    assert "security.W018" in result.stderr + result.stdout  # DEBUG on
    assert "security.W012" in result.stderr + result.stdout  # session cookie not secure


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = run_manage("check", env_overrides=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_settings_follow_the_environment():
    probe = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'], "
        "s.CELERY_BROKER_URL, s.MEDIA_ROOT, s.FAIRSKIN_BASE_MODEL, "
        "s.STORAGES['default']['BACKEND'])"
    )
    env = {
        **PRODUCTION_ENV,
        "MEDIA_ROOT": "/data/media",
        "FAIRSKIN_BASE_MODEL": "sd15-random",
        "AWS_STORAGE_BUCKET_NAME": "fairskin-images",
    }
    result = run_manage("shell", "-v", "0", "-c", probe, env_overrides=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "db.example.org",
        "redis://redis.example.org:6379/0",
        "/data/media",
        "sd15-random",
        "storages.backends.s3.S3Storage",
    ]


def test_docker_compose_matches_the_settings_names():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "cpu-worker", "gpu-worker", "beat", "postgres", "redis"} <= set(services)
    settings_source = (ROOT / "fairskin_site" / "settings.py").read_text()
    read_by_libraries = {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",  # boto3
        "HF_HUB_OFFLINE",
        "HF_HOME",
    }  # huggingface_hub
    for name in services["web"]["environment"]:
        assert f'"{name}"' in settings_source or name in read_by_libraries, name
    assert services["gpu-worker"]["environment"]["HF_HUB_OFFLINE"] == "1"
    gpu = services["gpu-worker"]
    assert "--queues gpu" in gpu["command"] and "--concurrency 1" in gpu["command"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--queues cpu" in services["cpu-worker"]["command"]
    assert "beat" in services["beat"]["command"]
    # Issue 19: the multi-GPU worker takes the queues worker_queues prints for its GPUs.
    multi = services["gpu-multi-worker"]
    assert multi["profiles"] == ["multi-gpu"]
    assert '--queues "$$(python manage.py worker_queues)"' in multi["command"]
    assert multi["deploy"]["resources"]["reservations"]["devices"][0]["count"] == (
        "${FAIRSKIN_GPUS:-2}"
    )
    # Issue 20: images and artifacts in MinIO's bucket, created before any app service starts;
    # each service's only volume is its own working folder and cache.
    assert services["minio"]["command"].startswith("server /data")
    assert "mc mb --ignore-existing" in services["minio-bucket"]["entrypoint"]
    for service in ("web", "cpu-worker", "gpu-worker", "beat"):
        assert services[service]["volumes"] == ["artifacts:/srv/artifacts"]
        assert services[service]["depends_on"]["minio-bucket"] == {
            "condition": "service_completed_successfully"
        }
        env = services[service]["environment"]
        assert env["AWS_STORAGE_BUCKET_NAME"] == "${AWS_STORAGE_BUCKET_NAME:-fairskin}"
        assert env["AWS_S3_ENDPOINT_URL"] == "${AWS_S3_ENDPOINT_URL:-http://minio:9000}"
        assert "FAIRSKIN_ARTIFACTS_CACHE_BYTES" in env and "MEDIA_ROOT" not in env
    assert services["web"]["environment"]["CELERY_BROKER_URL"].startswith("redis://redis")
    assert "@postgres:5432/" in services["web"]["environment"]["DATABASE_URL"]


def test_extra_gpu_worker_compose_joins_the_main_deployment():
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker = yaml.safe_load((ROOT / "docker-compose.worker.yml").read_text())["services"]
    assert set(worker) == {"gpu-worker"}
    gpu = worker["gpu-worker"]
    assert (
        gpu["command"].split("--hostname")[0]
        == main["gpu-worker"]["command"].split("--hostname")[0]
    )
    env = gpu["environment"]
    # Everything the main workers are told, this one is told too (connections from .env).
    assert set(main["gpu-worker"]["environment"]) - {
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_PROXY_SSL_HEADER",
    } <= set(env)
    for name in ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"):
        assert env[name].startswith(f"${{{name}:?"), name  # required, never a local default
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and device["device_ids"] == ["${GPU_ID:-0}"]
    # Issue 20: no shared mount; a volume of its own, and the bucket's settings required.
    assert gpu["volumes"] == ["worker-artifacts:/srv/artifacts"]
    for name in ("AWS_STORAGE_BUCKET_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name].startswith(f"${{{name}:?"), name


def test_models_and_migrations_agree():
    result = run_manage(
        "makemigrations", "--check", "--dry-run", env_overrides={**PRODUCTION_ENV, "DEBUG": "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
