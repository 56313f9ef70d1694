# One image for every configbus service: `admin`, `proxy` and `mock-upstream` are
# subcommands of the `configbus` entrypoint, chosen by the container's arguments:
#
#   docker build -t configbus:local .
#   docker run --rm configbus:local keygen
#   docker run --rm -p 8000:8000 -e CONFIGBUS_REDIS_URL=redis://redis:6379/0 \
#       configbus:local proxy --host 0.0.0.0 --port 8000
#
# Every dependency ships manylinux wheels (uvloop, httptools, hiredis, cryptography, lupa),
# so no compiler is needed in either stage.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# README.md* : pyproject names README.md as the long description; build without it too.
COPY pyproject.toml README.md* ./
COPY configbus ./configbus
COPY proxy ./proxy
COPY admin ./admin
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 configbus \
    && useradd --system --uid 10001 --gid configbus --no-create-home \
       --home-dir /var/lib/configbus --shell /usr/sbin/nologin configbus \
    && install -d -o configbus -g configbus -m 0750 /var/lib/configbus
COPY --from=build /opt/venv /opt/venv
# The proxy's last-known-good file (CONFIGBUS_SNAPSHOT_PATH) lives under /var/lib/configbus:
# mount a volume (compose) or an emptyDir (Kubernetes) there. No VOLUME line, so that admin
# and mock-upstream containers do not get anonymous volumes.
WORKDIR /var/lib/configbus
USER 10001:10001
# Default ports of `configbus proxy`, `configbus admin` and `configbus mock-upstream`.
# The services listen on 127.0.0.1 unless given `--host 0.0.0.0`.
EXPOSE 8000 8700 9001
# Exec form: configbus (uvicorn) is PID 1 and receives SIGTERM itself, which starts
# uvicorn's graceful shutdown (stop accepting, finish requests in flight, then exit).
ENTRYPOINT ["configbus"]
CMD ["--help"]
