# One image for the web server and both kinds of Celery worker: the `production` target, which
# docker-compose.yml and docker-compose.worker.yml build. GPU hosts need the NVIDIA container
# toolkit; torch's wheels bring their own CUDA runtime (CUDA 13 for torch 2.14.1 from PyPI).
#
#   docker build --target production -t fairskin:latest .
#   docker build --target test -t fairskin:test . && docker run --rm fairskin:test
#
# Stages: `builder` installs requirements/runtime.txt (every package pinned and hashed, torch
# included; see README, "Requirements") into /opt/venv; `production` copies that venv and the
# app, and has no test, lint or load tool in it; `test` is production plus requirements/dev.txt
# and the tests.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements/runtime.txt /tmp/requirements/runtime.txt
# Wheels only: an sdist's build dependencies would be fetched without hash checks.
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: \
        -r /tmp/requirements/runtime.txt \
    && /opt/venv/bin/pip check

# The application's files, less what only development uses.
FROM ${PYTHON_IMAGE} AS source
COPY . /app
RUN rm -rf /app/tests /app/bench /app/docs /app/scripts /app/.ci /app/Makefile \
        /app/requirements/dev.in /app/requirements/dev.txt /app/.pre-commit-config.yaml

FROM ${PYTHON_IMAGE} AS production
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FAIRSKIN_VAR_DIR=/srv/var

# OpenCV's shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --from=source /app /app
# collectstatic needs settings to load; the key is a placeholder used only at build time.
RUN SECRET_KEY=build-only-placeholder DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput \
    && rm -f /tmp/build.sqlite3

RUN useradd --create-home --uid 1000 fairskin \
    && mkdir -p /srv/var /srv/media /srv/artifacts \
    && chown -R fairskin /srv
USER fairskin

EXPOSE 8000
CMD ["gunicorn", "fairskin_site.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]

# The fast suite inside the image (SQLite and the filesystem broker unless DATABASE_URL and
# CELERY_BROKER_URL are given). Never deployed: the compose files build `production`.
FROM production AS test
USER root
COPY requirements/dev.txt /tmp/requirements/dev.txt
RUN pip install --require-hashes --only-binary=:all: -r /tmp/requirements/dev.txt \
    && pip check
# Writable by the test user: pytest and Hypothesis keep their files beside the code.
COPY --chown=fairskin . /app
# The Python client (client/, issue 22) that tests/client drives; requests is in the lock.
RUN pip install --no-deps --no-index --no-build-isolation /app/client && pip check \
    && chown fairskin /app
USER fairskin
CMD ["python", "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow"]
