"""The webhooks admin API against the real stores (memory, and Redis on a real redis-server): queue
health, the delivery log, replay with the admin token, 400s that say what to write, 404s, and never a
payload or a provider header in any answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.clock import FakeClock
from proxy.config.load import load_config
from proxy.config.model import Config
from proxy.events import WebhookReplayed
from proxy.state.memory_webhooks import MemoryWebhookStore
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import DeliveryQueue, EventStatus, InboundEvent
from proxy.web.admin.webhooks import add_webhook_routes
from tests.conftest import free_port

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = b"MessageSid=SM1&From=%2B15551234567&Body=Your+code+is+731905&MessageStatus=undelivered"
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
POLICY = """\
upstreams:
  twilio: {url: "https://api.twilio.com", prefix: /twilio}
webhooks:
  twilio_status:
    path: /hooks/twilio/status
    deliver_to: http://127.0.0.1:3000/twilio/status
    provider: none
  calendar_push:
    path: /hooks/google/calendar
    deliver_to: http://127.0.0.1:3000/google/push
    provider: none
"""
DAY, WEEK = 86_400.0, 7 * 86_400.0


def config(tmp_path: Path, token: str = TOKEN) -> Config:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "hooks.yaml").write_text(POLICY)
    (tmp_path / "config.yaml").write_text(f"admin:\n  token: '{token}'\n" if token else "{}\n")
    return load_config(tmp_path / "config.yaml", {})


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[DeliveryQueue, FakeClock]]:
    clock = FakeClock()
    queue: DeliveryQueue
    if request.param == "memory":
        queue = MemoryWebhookStore(clock=clock)
    else:
        queue = RedisWebhookStore(request.getfixturevalue("redis_url"), clock=clock, timeout=2.0)
    await queue.start()
    yield queue, clock
    await queue.close()


def serve(aiohttp_client: Any, cfg: Config, queue: DeliveryQueue | None, emitted: list[object]) -> Any:
    app = web.Application()
    add_webhook_routes(app, lambda: cfg, queue, emitted.append)
    return aiohttp_client(app)


async def accept(queue: DeliveryQueue, clock: FakeClock, key: str, webhook: str = "twilio_status",
                 age: float = 0.0) -> str:
    event = InboundEvent(webhook=webhook, dedupe_key=key, method="POST", query="",
                         headers=(("Content-Type", "application/x-www-form-urlencoded"),
                                  ("X-Twilio-Signature", SIGNATURE)),
                         body=BODY, received_at=clock.now() - age, org="AC123", event_type="undelivered",
                         verified="twilio")
    return (await queue.accept(event, dedupe_window=DAY, log_retention=WEEK)).event_id


async def settle_one(queue: DeliveryQueue, status: EventStatus, error: str = "") -> str:
    [delivery] = await queue.claim("twilio_status", "test", 1, 30.0)
    assert await queue.settle(delivery, status, error=error)
    return delivery.event_id


async def scenario(queue: DeliveryQueue, clock: FakeClock) -> dict[str, str]:
    """One completed, one dead letter, one waiting (42 s old) on twilio_status; calendar_push empty."""
    ids = {"completed": await accept(queue, clock, "a", age=50.0), "dead": await accept(queue, clock, "b", age=45.0),
           "pending": await accept(queue, clock, "c", age=42.0)}
    assert await settle_one(queue, EventStatus.COMPLETED) == ids["completed"]
    assert await settle_one(queue, EventStatus.DEAD_LETTER, "HTTP 422 from the app") == ids["dead"]
    return ids


def no_payload(text: str) -> None:
    for secret in ("15551234567", "731905", "Your+code", SIGNATURE, "MessageSid=", "Content-Type"):
        assert secret not in text, f"{secret!r} in an admin answer"


async def test_the_list_shows_counts_depth_and_the_oldest_pending_age(
        aiohttp_client: Any, store: tuple[DeliveryQueue, FakeClock], tmp_path: Path) -> None:
    queue, clock = store
    await scenario(queue, clock)
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, [])
    response = await client.get("/admin/webhooks")
    assert response.status == 200
    text = await response.text()
    no_payload(text)
    twilio, calendar = (await response.json())["webhooks"]
    assert twilio == {"name": "twilio_status", "path": "/hooks/twilio/status", "provider": "none", "mode": "queue",
                      "counts": {"pending": 1, "processing": 0, "completed": 1, "failed": 0, "dead_letter": 1},
                      "depth": 1, "oldest_pending_seconds": 42.0}
    assert calendar["counts"] == dict.fromkeys(("pending", "processing", "completed", "failed", "dead_letter"), 0)
    assert (calendar["depth"], calendar["oldest_pending_seconds"]) == (0, None)


async def test_events_filter_by_status_newest_first_and_one_event_by_id(
        aiohttp_client: Any, store: tuple[DeliveryQueue, FakeClock], tmp_path: Path) -> None:
    queue, clock = store
    ids = await scenario(queue, clock)
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, [])

    response = await client.get("/admin/webhooks/twilio_status/events", params={"status": "dead_letter"})
    assert response.status == 200
    answer = await response.json()
    no_payload(await response.text())
    assert (answer["status"], answer["limit"]) == ("dead_letter", 50)
    [dead] = answer["events"]
    assert dead["id"] == ids["dead"]
    assert (dead["status"], dead["attempts"], dead["error"], dead["org"], dead["event_type"]) == (
        "dead_letter", 1, "HTTP 422 from the app", "AC123", "undelivered")
    assert dead["last_attempt_at"] is not None and dead["completed_at"] is None

    everything = await (await client.get("/admin/webhooks/twilio_status/events")).json()
    assert [e["id"] for e in everything["events"]] == [ids["pending"], ids["dead"], ids["completed"]]
    two = await (await client.get("/admin/webhooks/twilio_status/events?limit=2")).json()
    assert len(two["events"]) == 2

    one = await client.get(f"/admin/webhooks/twilio_status/events/{ids['completed']}")
    assert one.status == 200
    no_payload(await one.text())
    record = await one.json()
    assert (record["status"], record["attempts"], record["error"]) == ("completed", 1, None)
    assert record["completed_at"] is not None


@pytest.mark.parametrize(("query", "message"), [
    ("status=dead", "status must be one of pending, processing, completed, failed, dead_letter, not 'dead'"),
    ("status=DEAD_LETTER", "status must be one of pending, processing, completed, failed, dead_letter, "
                           "not 'DEAD_LETTER'"),
    ("limit=0", "limit must be a whole number from 1 to 1000, not '0'"),
    ("limit=-3", "limit must be a whole number from 1 to 1000, not '-3'"),
    ("limit=ten", "limit must be a whole number from 1 to 1000, not 'ten'"),
])
async def test_a_bad_status_or_limit_is_a_400_that_says_what_to_write(
        aiohttp_client: Any, tmp_path: Path, query: str, message: str) -> None:
    client: TestClient = await serve(aiohttp_client, config(tmp_path), MemoryWebhookStore(), [])
    response = await client.get(f"/admin/webhooks/twilio_status/events?{query}")
    assert response.status == 400
    assert await response.json() == {"status": 400, "message": message}


async def test_a_large_limit_is_capped(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient = await serve(aiohttp_client, config(tmp_path), MemoryWebhookStore(), [])
    answer = await (await client.get("/admin/webhooks/twilio_status/events?limit=1000000")).json()
    assert answer["limit"] == 1000


async def test_unknown_webhooks_and_events_are_404(aiohttp_client: Any, tmp_path: Path) -> None:
    queue = MemoryWebhookStore()
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, [])
    for method, path in [("GET", "/admin/webhooks/nope/events"), ("GET", "/admin/webhooks/nope/events/x"),
                         ("GET", "/admin/webhooks/twilio_status/events/no-such-id"),
                         ("POST", "/admin/webhooks/nope/events/x/replay"), ("POST", "/admin/webhooks/nope/replay"),
                         ("POST", "/admin/webhooks/twilio_status/events/no-such-id/replay")]:
        response = await client.request(method, path, headers=AUTH)
        assert response.status == 404, (method, path)
        assert "no such" in (await response.json())["message"]


async def test_without_a_store_there_are_no_webhooks(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient = await serve(aiohttp_client, config(tmp_path), None, [])
    assert await (await client.get("/admin/webhooks")).json() == {"webhooks": []}
    assert (await client.get("/admin/webhooks/twilio_status/events")).status == 404


async def test_replay_needs_the_token_and_brings_a_dead_letter_back_with_attempts_from_zero(
        aiohttp_client: Any, store: tuple[DeliveryQueue, FakeClock], tmp_path: Path) -> None:
    queue, clock = store
    ids = await scenario(queue, clock)
    emitted: list[object] = []
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, emitted)
    path = f"/admin/webhooks/twilio_status/events/{ids['dead']}/replay"

    assert (await client.post(path)).status == 401
    assert (await client.post(path, headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await queue.event("twilio_status", ids["dead"])).status == EventStatus.DEAD_LETTER  # type: ignore[union-attr]

    response = await client.post(path, headers=AUTH)
    assert response.status == 200
    no_payload(await response.text())
    answer = await response.json()
    assert answer["replayed"] == 1
    assert (answer["event"]["status"], answer["event"]["attempts"]) == ("pending", 0)
    assert emitted == [WebhookReplayed("twilio_status", 1)]
    claimed = {d.event_id: d for d in await queue.claim("twilio_status", "test", 5, 30.0)}
    assert set(claimed) == {ids["dead"], ids["pending"]}
    assert (claimed[ids["dead"]].attempt, claimed[ids["dead"]].body) == (1, BODY)

    # Queued again (now processing): a second replay is refused, and says why.
    response = await client.post(path, headers=AUTH)
    assert response.status == 409
    assert (await response.json())["message"] == "the event is processing: it is already queued for delivery"


async def test_replay_all_of_a_status(aiohttp_client: Any, store: tuple[DeliveryQueue, FakeClock],
                                      tmp_path: Path) -> None:
    queue, clock = store
    await scenario(queue, clock)
    await accept(queue, clock, "d")
    await settle_one(queue, EventStatus.DEAD_LETTER, "HTTP 400")
    emitted: list[object] = []
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, emitted)

    assert (await client.post("/admin/webhooks/twilio_status/replay")).status == 401
    bad = await client.post("/admin/webhooks/twilio_status/replay?status=pending", headers=AUTH)
    assert bad.status == 400
    assert (await bad.json())["message"] == ("status must be one of dead_letter, failed, completed, not 'pending' "
                                             "(those events are already queued)")
    response = await client.post("/admin/webhooks/twilio_status/replay?status=dead_letter", headers=AUTH)
    assert await response.json() == {"webhook": "twilio_status", "status": "dead_letter", "replayed": 2}
    assert emitted == [WebhookReplayed("twilio_status", 2)]
    assert (await queue.stats("twilio_status")).counts[EventStatus.DEAD_LETTER] == 0
    # Nothing left in dead_letter: replaying again replays nothing, and tells nobody.
    response = await client.post("/admin/webhooks/twilio_status/replay", headers=AUTH)
    assert (await response.json())["replayed"] == 0
    assert len(emitted) == 1


async def test_without_an_admin_token_replays_are_refused(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient = await serve(aiohttp_client, config(tmp_path, token=""), MemoryWebhookStore(), [])
    response = await client.post("/admin/webhooks/twilio_status/replay", headers=AUTH)
    assert response.status == 403
    assert "set admin.token" in (await response.json())["message"]


async def test_an_unreachable_redis_is_a_503_not_a_crash(aiohttp_client: Any, tmp_path: Path) -> None:
    queue = RedisWebhookStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    client: TestClient = await serve(aiohttp_client, config(tmp_path), queue, [])
    for path in ("/admin/webhooks", "/admin/webhooks/twilio_status/events",
                 "/admin/webhooks/twilio_status/events/x"):
        response = await client.get(path)
        assert response.status == 503, path
        assert response.headers["Retry-After"] == "5"
        assert "does not answer" in (await response.json())["message"]
    await queue.close()
