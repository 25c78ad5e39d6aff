# Pinned to Debian bookworm: its postgresql-client (15) is what `manage.py backup`/`restore` run in the container,
# and pg_dump must be at least the server's major version — docker-compose.yml runs postgres:15 to match.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN HERMES_ENV=dev python manage.py collectstatic --noinput
USER nobody
