# syntax=docker/dockerfile:1
#
# speclearn image: the proxy by default, the compiler sidecar with `docker run IMAGE compiler`
# (ENTRYPOINT is the `speclearn` console script, CMD is its arguments). The proxy listens on
# 0.0.0.0: with SPECLEARN_UPSTREAM_API_KEY it needs SPECLEARN_API_KEYS (client keys) or it
# refuses to start, unless SPECLEARN_ALLOW_OPEN_PROXY=1.
#
# Two stages so the runtime image carries no compiler toolchain, pip cache or source tree:
# the builder turns the project and every dependency into wheels, the runtime installs
# only those wheels, offline.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY compiler ./compiler

# Extras to bake in (comma-separated), e.g. "postgres" for the PostgreSQL ledger/registry driver.
# An extra the project does not define only makes pip warn, so the default is safe either way.
ARG SPECLEARN_EXTRAS=postgres
RUN pip wheel --wheel-dir /wheels ".[${SPECLEARN_EXTRAS}]"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG SPECLEARN_EXTRAS=postgres
ARG UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPECLEARN_SPECS_DIR=/app/specs \
    SPECLEARN_DATA_DIR=/data

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid "${UID}" speclearn \
 && useradd --system --uid "${UID}" --gid speclearn --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin speclearn \
 && mkdir -p /app /data \
 && chown speclearn:speclearn /app /data

# --no-index: the runtime stage never reaches a registry; it installs exactly what was built.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "speclearn[${SPECLEARN_EXTRAS}]"

WORKDIR /app
# The file registry seeds a named volume mounted here (Docker copies image content into an
# empty named volume), so the compiler can publish new versions the proxy then hot-reloads.
COPY --chown=speclearn:speclearn specs ./specs

# SQLite ledger (single-replica default) lives here; mount a volume to keep it.
VOLUME ["/data"]

USER ${UID}:${UID}
EXPOSE 8080

# slim has no curl: probe with the interpreter we ship. The URL is overridable so the compiler
# (no HTTP API, metrics on 9101) can reuse the same check: SPECLEARN_HEALTHCHECK_URL=.../metrics.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SPECLEARN_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=2)"]

ENTRYPOINT ["speclearn"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
