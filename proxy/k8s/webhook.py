"""The mutating admission webhook: ``POST /mutate`` answers an AdmissionReview v1 for a pod with a JSON
Patch that applies :func:`proxy.k8s.inject.inject`. It never refuses a pod: anything it cannot inject is
allowed unchanged (and logged).

Its serving certificate is reloaded when the files change (:mod:`proxy.k8s.certs`), and a plain-HTTP
``/metrics`` port reports the certificate's expiry: with ``failurePolicy: Ignore`` an expired
certificate only shows as pods without the sidecar, so it is alerted on before
(deploy/prometheus/alerts.yaml). The metrics port is plain HTTP so that a broken certificate cannot
also hide the metric that reports it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import ssl
from typing import Any

import jsonpatch
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from proxy.k8s.certs import ServingCertificate
from proxy.k8s.inject import Options, inject
from proxy.observe.logs import configure_logging

log = logging.getLogger("resilience_proxy.k8s.webhook")

OPTIONS_KEY: web.AppKey[Options] = web.AppKey("options", Options)


def review_response(review: Any, options: Options) -> dict[str, Any]:
    """The AdmissionReview answering ``review``: always allowed, with a patch when the pod gains something."""
    request = review.get("request") if isinstance(review, dict) else None
    uid = request.get("uid", "") if isinstance(request, dict) else ""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    try:
        pod = request["object"]
        if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
            raise ValueError(f"not a Pod: {str(pod)[:80]}")
        pod = {**pod, "kind": "Pod"}
        result = inject(pod, options)
        for outcome in result.outcomes:
            log.info("%s %s", request.get("namespace", ""), outcome)
        patch = jsonpatch.make_patch(pod, result.obj).patch
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    except Exception as error:  # noqa: BLE001  (never block a pod because of us)
        log.warning("allowed without injection (uid %s): %r", uid, error)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def mutate(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return web.json_response({"error": "send application/json"}, status=415)
    try:
        review = await request.json()
    except ValueError:
        return web.json_response({"error": "not JSON"}, status=400)
    return web.json_response(review_response(review, request.app[OPTIONS_KEY]))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(options: Options) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[OPTIONS_KEY] = options
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app





class InjectorMetrics:
    """The injector's own registry (never the sidecar's families)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.expiry = Gauge("resilience_proxy_injector_certificate_expiry_timestamp_seconds",
                            "When the serving certificate the injector presents expires (unix seconds).",
                            registry=self.registry)
        self.reloads = Counter("resilience_proxy_injector_certificate_reloads",
                               "Serving certificate loads after a change of its files, by outcome.",
                               ["outcome"], registry=self.registry)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)

    def loaded(self, expiry: float) -> None:
        self.expiry.set(expiry)

    def reload_failed(self) -> None:
        self.reloads.labels("failure").inc()


def make_metrics_app(metrics: InjectorMetrics) -> web.Application:
    """``GET /metrics`` (and ``/healthz``) on the plain-HTTP metrics port."""
    async def exposition(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", healthz)
    return app


def _address(flag: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{flag} {value!r}: write host:port, e.g. 0.0.0.0:8443")
    return host.strip("[]"), int(port)


async def _watch(certificate: ServingCertificate, metrics: InjectorMetrics, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if certificate.reload_if_changed():
            metrics.reloads.labels("success").inc()


async def _serve(listen: tuple[str, int], metrics_listen: tuple[str, int], certificate: ServingCertificate,
                 metrics: InjectorMetrics, options: Options, reload_interval: float) -> None:
    runners = [web.AppRunner(make_app(options), access_log=None),
               web.AppRunner(make_metrics_app(metrics), access_log=None)]
    try:
        for runner in runners:
            await runner.setup()
        await web.TCPSite(runners[0], *listen, ssl_context=certificate.listening).start()
        await web.TCPSite(runners[1], *metrics_listen).start()
        log.info("injector listening", extra={"https": "{}:{}".format(*listen),
                                                 "metrics": "{}:{}".format(*metrics_listen)})
        watcher = asyncio.create_task(_watch(certificate, metrics, reload_interval))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        watcher.cancel()
    finally:
        for runner in runners:
            await runner.cleanup()


def serve_injector(listen: str, cert: str, key: str, options: Options, *, metrics_listen: str = "0.0.0.0:9901",
                   reload_interval: float = 10.0) -> int:
    """Serve until SIGTERM/SIGINT, reloading the key pair when its files change; the exit status."""
    configure_logging("info")
    try:
        addresses = _address("--listen", listen), _address("--metrics-listen", metrics_listen)
    except ValueError as error:
        log.error("%s", error)
        return 2
    metrics = InjectorMetrics()
    try:
        certificate = ServingCertificate(cert, key, on_load=metrics.loaded, on_failure=metrics.reload_failed)
        asyncio.run(_serve(*addresses, certificate, metrics, options, reload_interval))
    except (OSError, ssl.SSLError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 1
    return 0
