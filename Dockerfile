# syntax=docker/dockerfile:1
# resilience-proxy sidecar image (deploy/k8s/README.md). Build: docker build -t resilience-proxy .
# tests/deploy/test_dockerfile.py lints this file with hadolint and runs its pip commands.

# --- builder: wheels for the package and every dependency (binary wheels from PyPI) ---
FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: only the wheels installed; no compilers, no build context ---
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# No PROMETHEUS_MULTIPROC_DIR: one process keeps its metrics in memory; `--workers N` creates its own
# directory for their files under /tmp (or under PROMETHEUS_MULTIPROC_DIR when set).
# The wheels are bind-mounted from the builder, so they never land in a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels resilience-proxy==0.1.0 \
    && groupadd --gid 10001 resilience-proxy \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin resilience-proxy
# A working default config; Kubernetes mounts the ConfigMap over /etc/resilience-proxy/.
COPY deploy/k8s/base/config.yaml /etc/resilience-proxy/config.yaml
COPY deploy/k8s/base/policies/ /etc/resilience-proxy/
USER 10001:10001
# 8080: data port (the config binds it to 127.0.0.1: reachable only from the same pod/network namespace).
# 9901: admin port (/healthz, /readyz, /metrics).
EXPOSE 8080 9901
# No curl in slim images: python's urllib fails (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]
ENTRYPOINT ["resilience-proxy"]
CMD ["run", "--config", "/etc/resilience-proxy/config.yaml"]
