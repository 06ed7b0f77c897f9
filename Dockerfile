# One image for every Python service; docker-compose.yml picks the command per service.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p schemas && touch schemas/__init__.py billing_cli.py \
    && pip install . \
    && pip uninstall -y billing

COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home /app billing \
    && mkdir -p /run/billing && chown billing /run/billing

USER billing
ENV HEARTBEAT_FILE=/run/billing/heartbeat \
    LOG_FORMAT=json
EXPOSE 8000 8001
CMD ["python", "-m", "command_api"]
