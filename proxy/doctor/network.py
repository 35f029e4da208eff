"""The checks of ``resilience-proxy doctor`` that leave the machine: Slack, Sentry, upstreams (Redis:
:mod:`proxy.doctor.redis_checks`, :mod:`proxy.doctor.cluster_checks`).

Each is bounded by :data:`CHECK_TIMEOUT` and turns every failure into a FAIL row with the reason,
never an exception: the point is a complete report, not the first error.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from proxy.config.model import Config, SlackSettings, Upstream
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result
from proxy.state.base import BackendTimeout
from proxy.web.tls import upstream_ssl

CHECK_TIMEOUT = 5.0
"""Per check: long enough for a slow TLS handshake across the world, short enough to wait for."""
TEST_TEXT = "resilience-proxy doctor: test alert (nothing is wrong)"


def describe_failure(error: BaseException) -> str:
    """Why a check got no answer, in a few words (a timeout says how long it waited)."""
    if isinstance(error, (TimeoutError, BackendTimeout)):
        return f"no answer within {CHECK_TIMEOUT:g}s"
    return str(error) or type(error).__name__


def _slack_client(settings: SlackSettings) -> Any:
    from slack_sdk.web.async_client import AsyncWebClient

    return AsyncWebClient(token=settings.token, base_url=settings.base_url, timeout=int(CHECK_TIMEOUT),
                          retry_handlers=[])


async def _slack_call(name: str, call: Any) -> tuple[Any, Result | None]:
    """The answer, or the FAIL/WARN row saying why there is none (``missing_scope`` only warns)."""
    from slack_sdk.errors import SlackApiError

    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await call, None
    except SlackApiError as error:
        code = error.response.get("error") if isinstance(error.response.data, dict) else None
        code = code or f"HTTP {error.response.status_code}"
        if code == "missing_scope":
            needed = error.response.get("needed", "")
            return None, Result(name, WARN, f"not checked: the token lacks the scope {needed}".rstrip())
        return None, Result(name, FAIL, f"Slack answered {code}")
    except Exception as error:
        return None, Result(name, FAIL, describe_failure(error))


async def check_slack(settings: SlackSettings) -> list[Result]:
    """``auth.test`` for the token; ``conversations.info`` for a channel id (a #name needs a listing)."""
    client = _slack_client(settings)
    answer, failed = await _slack_call("slack token", client.auth_test())
    if failed is not None:
        return [failed, Result("slack channel", SKIP, "token not valid")]
    token = Result("slack token", PASS, f"valid: {answer.get('user')} in {answer.get('team')}")
    channel = settings.channel
    if channel.startswith("#") or not channel[:1].isupper():
        return [token, Result("slack channel", WARN, f"{channel}: not checked (give a channel id such as C0123 to "
                                                     "check it, or run with --send-test-alert)")]
    answer, failed = await _slack_call("slack channel", client.conversations_info(channel=channel))
    if failed is not None:
        return [token, failed]
    info = answer.get("channel") or {}
    member = info.get("is_member")
    detail = f"{channel} (#{info.get('name', '?')})" + ("" if member is not False else ": the bot is not a member")
    return [token, Result("slack channel", PASS if member is not False else WARN, detail)]


async def check_sentry_reachable(dsn: str) -> Result:
    """Any HTTP answer from the DSN's envelope endpoint proves the host is reachable (a HEAD stores nothing)."""
    import aiohttp

    parts = urlsplit(dsn)
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    port = f":{parts.port}" if parts.port else ""
    url = f"{parts.scheme}://{parts.hostname}{port}/api/{project}/envelope/"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT)) as session:
            async with session.head(url, allow_redirects=False) as response:
                return Result("sentry host", PASS, f"{parts.hostname}{port} answered HTTP {response.status}")
    except Exception as error:
        return Result("sentry host", FAIL, f"{parts.hostname}{port}: {describe_failure(error)}")


async def check_upstream(upstream: Upstream) -> Result:
    """Resolve, connect and (for https) complete a handshake verified as the forwarder verifies it."""
    name = f"upstream {upstream.name}"
    parts = urlsplit(upstream.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as error:
        return Result(name, FAIL, f"{host}: DNS: {describe_failure(error)}")
    context = upstream_ssl(upstream.ca_bundle) if parts.scheme == "https" else None  # as the forwarder's
    started = time.perf_counter()
    try:
        async with asyncio.timeout(max(upstream.connect_timeout, 1.0)):
            _, writer = await asyncio.open_connection(host, port, ssl=context,
                                                      server_hostname=host if context else None)
    except (OSError, TimeoutError) as error:
        what = "TLS" if isinstance(error, ssl.SSLError) else "connect"
        return Result(name, FAIL, f"{host}:{port}: {what}: {describe_failure(error)}")
    elapsed = (time.perf_counter() - started) * 1000
    tls = writer.get_extra_info("ssl_object")
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    kind = f"{tls.version()} verified" if tls is not None else "TCP (plain http)"
    return Result(name, PASS, f"{host}:{port} ({len(addresses)} addresses): {kind} in {elapsed:.0f} ms")


async def send_alerts(config: Config) -> list[Result]:
    """``--send-test-alert``: one Slack message and one Sentry event, through the same settings as alerts."""
    results: list[Result] = []
    if config.slack is None:
        results.append(Result("test slack message", SKIP, "Slack not configured"))
    else:
        client = _slack_client(config.slack)
        answer, failed = await _slack_call("test slack message",
                                           client.chat_postMessage(channel=config.slack.channel, text=TEST_TEXT))
        results.append(failed or Result("test slack message", PASS, f"posted to {config.slack.channel} "
                                                                    f"(ts {answer.get('ts')})"))
    if config.sentry is None:
        results.append(Result("test sentry event", SKIP, "Sentry not configured"))
    else:
        results.append(await asyncio.to_thread(_send_sentry_event, config))
    return results


def _send_sentry_event(config: Config) -> Result:
    """Through sentry-sdk with the sidecar's own options; the SDK never says whether delivery worked."""
    import sentry_sdk

    from proxy.observe.sentry import sdk_options

    assert config.sentry is not None
    sentry_sdk.init(**sdk_options(config.sentry))
    try:
        event_id = sentry_sdk.capture_message("resilience-proxy doctor: test event (nothing is wrong)", "info")
        sentry_sdk.flush(timeout=CHECK_TIMEOUT)
    finally:
        client = sentry_sdk.get_client()
        client.close(timeout=CHECK_TIMEOUT)
    if not event_id:
        return Result("test sentry event", FAIL, "the SDK dropped the event")
    return Result("test sentry event", PASS, f"sent event {event_id} (the SDK does not confirm delivery)")
