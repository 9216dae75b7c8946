"""FairSkin settings, read from the environment through django-environ.

With nothing set, the app runs on SQLite and kombu's filesystem broker under ``var/`` so that
``make run`` works on a bare machine. Production sets ``DATABASE_URL`` (PostgreSQL) and
``CELERY_BROKER_URL`` (Redis); docker-compose.yml uses the same names.
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("FAIRSKIN_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

DEBUG = env.bool("DEBUG", default=False)
# A development key is only acceptable with DEBUG on; production must provide its own.
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "fairskin_site.apps.FairSkinAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "accounts",
    "jobs",
    "catalog",
    "training",
    "generation",
    "review",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A database outage answers 503 with a reason (JSON under /api/) instead of a bare 500.
    "fairskin_site.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires, so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "fairskin_site.urls"
WSGI_APPLICATION = "fairskin_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.role",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'fairskin.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web server and worker share the file: wait on locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"
LOGOUT_REDIRECT_URL = "accounts:login"

# Login throttling: lock a username from one address after repeated failures.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_IPWARE_PROXY_COUNT = env.int("AXES_PROXY_COUNT", default=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Artifacts (runs' weights and checkpoints, batch references, release archives) are stored
# under keys (jobs.artifacts). Without a bucket this folder is the store; with
# AWS_STORAGE_BUCKET_NAME set the bucket is, and this folder is the host's working folder and
# its hash-keyed cache (FAIRSKIN_ARTIFACTS_CACHE_BYTES, least recently used out first).
FAIRSKIN_ARTIFACTS_ROOT = Path(
    env.str("FAIRSKIN_ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts"))
)
FAIRSKIN_ARTIFACTS_CACHE_BYTES = env.int("FAIRSKIN_ARTIFACTS_CACHE_BYTES", default=50 << 30)
# How often a running job's working folder is published (only when it changed): a checkpoint
# reaches the bucket within this many seconds of being written.
FAIRSKIN_ARTIFACTS_SYNC_SECONDS = env.float("FAIRSKIN_ARTIFACTS_SYNC_SECONDS", default=10.0)
FAIRSKIN_BASE_MODEL = env.str("FAIRSKIN_BASE_MODEL", default="tiny")
# Where `tiny` and `sd15-random` are written once as diffusers folders.
FAIRSKIN_MODEL_CACHE = Path(env.str("FAIRSKIN_MODEL_CACHE", default=str(VAR_DIR / "models")))
# Feature extractors for scoring generated images. Without weights files they are built with
# random weights, and every check and metric from them is labelled uncalibrated (not applied).
FAIRSKIN_INCEPTION_WEIGHTS = env.str("FAIRSKIN_INCEPTION_WEIGHTS", default="")
FAIRSKIN_LPIPS_WEIGHTS = env.str("FAIRSKIN_LPIPS_WEIGHTS", default="")
# An open_clip model name, or a path to an open_clip model config JSON.
# A public IP-Adapter for SD v1.5 (a folder with ip_adapter.safetensors, or the weight name
# below, and image_encoder/), used by image-prompt batches whose model trained none of its own.
FAIRSKIN_IP_ADAPTER_DIR = env.str("FAIRSKIN_IP_ADAPTER_DIR", default="")
FAIRSKIN_IP_ADAPTER_WEIGHT = env.str("FAIRSKIN_IP_ADAPTER_WEIGHT", default="ip_adapter.safetensors")
FAIRSKIN_CLIP_MODEL = env.str("FAIRSKIN_CLIP_MODEL", default="ViT-B-32")
FAIRSKIN_CLIP_WEIGHTS = env.str("FAIRSKIN_CLIP_WEIGHTS", default="")
# Threads torch may use in a worker (0: torch's default). Tests and small machines use 1.
FAIRSKIN_TORCH_THREADS = env.int("FAIRSKIN_TORCH_THREADS", default=0)
# Images over this many pixels are refused at import (decompression bombs, absurd scans).
FAIRSKIN_MAX_IMAGE_PIXELS = env.int("FAIRSKIN_MAX_IMAGE_PIXELS", default=40_000_000)
# Admin uploads: a metadata CSV and an optional zip of images.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 << 20
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 << 20
FAIRSKIN_MAX_UPLOAD_BYTES = env.int("FAIRSKIN_MAX_UPLOAD_BYTES", default=4 << 30)
# A metadata CSV is parsed in memory on the upload form: Fitzpatrick17k's is ~3 MB.
FAIRSKIN_MAX_METADATA_BYTES = env.int("FAIRSKIN_MAX_METADATA_BYTES", default=32 << 20)

# Images (and artifacts, above) live in local files unless an S3-compatible bucket is
# configured (django-storages for images; jobs.artifacts for artifacts).
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="")
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="")
# Empty: boto3's own chain (environment, instance role).
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
if AWS_STORAGE_BUCKET_NAME:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL or None,
            "region_name": AWS_S3_REGION_NAME or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT, "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER=1 so Django trusts
# X-Forwarded-Proto; the secure defaults below apply whenever DEBUG is off.
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # Personal API tokens of engineers and leads (accounts.tokens); session stays first,
        # so a request with no credentials is still a 403, and a bad token is a 401.
        "accounts.api_auth.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # An ApplicationError (a refusal) answers {"detail": message} with its status.
    "EXCEPTION_HANDLER": "common.refusals.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FairSkin API",
    "DESCRIPTION": "FairSkin's API: datasets, training runs, generation batches, jobs, review "
    "studies, a rater's queue and ratings, gate results, releases and fairness reports. Scripts "
    "authenticate with a personal API token (engineers and leads, made on the account page).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Training runs outlast Redis' default one-hour visibility timeout; recovery of a dead
    # worker's job comes from the lease sweep, not from the broker redelivering it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 12 * 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The job sweep is not a periodic task but a thread of the beat process (jobs.sweeper), so
# it never waits in a queue behind ordinary work. The notifications' check (reminders to idle
# raters, mails whose message was lost) can wait: it is a task on the cpu queue.
FAIRSKIN_NOTIFY_CHECK_SECONDS = env.float("FAIRSKIN_NOTIFY_CHECK_SECONDS", default=900.0)
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "notifications-periodic": {
        "task": "notifications.periodic",
        "schedule": FAIRSKIN_NOTIFY_CHECK_SECONDS,
        "options": {"queue": "cpu"},
    },
}
FAIRSKIN_SWEEP_SECONDS = env.float("FAIRSKIN_SWEEP_SECONDS", default=30.0)

# Jobs: a worker holds a job while its lease is fresh and extends it on every progress report.
FAIRSKIN_JOB_LEASE_SECONDS = env.int("FAIRSKIN_JOB_LEASE_SECONDS", default=120)
FAIRSKIN_JOB_MAX_ATTEMPTS = env.int("FAIRSKIN_JOB_MAX_ATTEMPTS", default=5)
# A queued job nobody claimed for this long had its broker message lost: send it again.
FAIRSKIN_JOB_REQUEUE_STALE_SECONDS = env.int("FAIRSKIN_JOB_REQUEUE_STALE_SECONDS", default=300)

# --- Notifications and email (issue 23) ------------------------------------------------------
# EMAIL_URL (smtp+tls://user:password@host:587, consolemail://, ...) sets the mail backend and
# server in one; without it mail is printed to the console (make run). A mail server's failure
# never fails the work: the mail is retried by its task and stays visible as not sent.
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="FairSkin <fairskin@localhost>")
# The site's address, for the links in mails.
FAIRSKIN_SITE_URL = env.str("FAIRSKIN_SITE_URL", default="http://localhost:8000")
# A rater with unrated items and no rating for this long is reminded, at most this many
# times per study (the next reminder waits as long again).
FAIRSKIN_NOTIFY_REMINDER_IDLE_HOURS = env.float("FAIRSKIN_NOTIFY_REMINDER_IDLE_HOURS", default=48.0)
FAIRSKIN_NOTIFY_REMINDER_MAX = env.int("FAIRSKIN_NOTIFY_REMINDER_MAX", default=3)
# Retries of a mail the server refused (backoff from 1 minute to 1 hour between them).
FAIRSKIN_NOTIFY_EMAIL_RETRIES = env.int("FAIRSKIN_NOTIFY_EMAIL_RETRIES", default=6)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}
