# One image for every Python service; docker-compose.yml picks the command per service.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them: exactly the runtime lock, every
# transitive package pinned. Development packages (the PostgreSQL wheel, honcho, test tools) are
# in requirements/dev.lock and never reach the image (docs/decisions/0114).
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip install -r requirements/runtime.lock

COPY . .
# --no-deps: the project itself, nothing beyond the lock.
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home /app billing \
    && mkdir -p /run/billing /var/lib/billing-sandbox \
    && chown billing /run/billing /var/lib/billing-sandbox

USER billing
ENV HEARTBEAT_FILE=/run/billing/heartbeat \
    LOG_FORMAT=json
EXPOSE 8000 8001
CMD ["python", "-m", "command_api"]
