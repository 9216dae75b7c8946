# One image for the web server and both kinds of Celery worker.
# GPU hosts need the NVIDIA container toolkit; torch's wheels bring their own CUDA runtime.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FAIRSKIN_VAR_DIR=/srv/var

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs settings to load; the key is a placeholder used only at build time.
RUN SECRET_KEY=build-only-placeholder DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput

RUN useradd --create-home --uid 1000 fairskin \
    && mkdir -p /srv/var /srv/media /srv/artifacts \
    && chown -R fairskin /srv
USER fairskin

EXPOSE 8000
CMD ["gunicorn", "fairskin_site.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
