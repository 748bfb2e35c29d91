# syntax=docker/dockerfile:1
#
# Corkboard container image.
#
#   docker build -t corkboard .
#   docker run --rm -p 8000:8000 corkboard                        # memory backend
#   docker run --rm -p 8000:8000 -e CORKBOARD_BACKEND=redis://redis:6379/0 corkboard
#
# Every setting comes from CORKBOARD_* environment variables (see docs/deploy.md).
# The base image is pinned by its exact tag; pin it by digest too
# (python:3.11-slim-bookworm@sha256:...) where your registry lets you resolve one.

############################ build stage ############################
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A self-contained virtualenv that the runtime stage copies whole. Every
# dependency ships manylinux wheels for CPython 3.11, so no compiler is needed
# here either. pip and setuptools are removed from the venv once it is built,
# so no installer ships in the image.
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
COPY pyproject.toml README* ./
COPY app ./app
# --compile: bytecode is written now, since the runtime root filesystem is read-only.
RUN pip install --no-cache-dir --compile . \
    && pip uninstall --yes pip setuptools

############################ runtime stage ##########################
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="corkboard" \
      org.opencontainers.image.description="Shared coordination state for multi-agent systems over HTTP and SSE" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# Fixed numeric ids so that Kubernetes' runAsNonRoot can verify them and a
# mounted volume can be given the matching fsGroup.
RUN groupadd --system --gid 10001 corkboard \
    && useradd --system --uid 10001 --gid corkboard --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin corkboard \
    && mkdir -p /var/lib/corkboard \
    && chown corkboard:corkboard /var/lib/corkboard

COPY --from=build /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/corkboard
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# Exec form: the server is PID 1 and receives SIGTERM itself, so open SSE
# streams are closed cleanly on shutdown. Backend, artifacts, tokens, limits
# and workers are read from CORKBOARD_* variables; only the bind address is
# fixed here.
ENTRYPOINT ["corkboard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
