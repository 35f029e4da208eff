"""The mutating admission webhook: ``POST /mutate`` answers an AdmissionReview v1 for a pod with a JSON
Patch that applies :func:`proxy.k8s.inject.inject`. It never refuses a pod: anything it cannot inject is
allowed unchanged (and logged)."""

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

from proxy.k8s.inject import Options, inject

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


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def _serve(host: str, port: int, context: ssl.SSLContext, options: Options) -> None:
    runner = web.AppRunner(make_app(options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    log.info("injector listening on https://%s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def serve_injector(listen: str, cert: str, key: str, options: Options) -> int:
    """Serve until SIGTERM/SIGINT; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        log.error("--listen %r: write host:port, e.g. 0.0.0.0:8443", listen)
        return 2
    try:
        context = server_ssl_context(cert, key)
        asyncio.run(_serve(host.strip("[]"), int(port), context, options))
    except (OSError, ssl.SSLError) as error:
        log.error("cannot start: %s", error)
        return 1
    return 0
