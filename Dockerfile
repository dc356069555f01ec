# syntax=docker/dockerfile:1
#
# One image for every service of the chat platform. The command picks what runs:
#   docker run IMAGE            -> all-in-one (SQLite + in-process bus, port 8000)
#   docker run IMAGE auth       -> auth under gunicorn
#   docker run IMAGE gateway    -> a WebSocket gateway under uvicorn
#   docker run IMAGE history    -> the history writer + read API
#   docker run IMAGE migrate    -> alembic upgrade head, then exit
# Build from the repository root:  docker build -t chat:dev .
# See docs/DEPLOY.md. tests/deploy/test_dockerfile.py checks this file.

# ---- builder: resolve the pinned runtime dependencies into a venv -------------------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only pyproject.toml: the dependency layer is rebuilt when the pins change, not on every
# code change. The project itself is not installed: its code is copied to /app below.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && /opt/venv/bin/pip install --require-virtualenv -r requirements.txt

# ---- runtime: slim, non-root, read-only friendly --------------------------------------------
FROM python:3.11.14-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

RUN groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chat

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY web/ ./web/
COPY services/ ./services/
# Byte-compile at build time (the root filesystem is read-only at run time); var/ is the only
# writable path, for the all-in-one SQLite file (mount a volume there to keep it).
RUN python -m compileall -q services migrations \
 && mkdir -p /app/var && chown 10001:10001 /app/var

USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python", "-m", "services"]
CMD ["all"]
