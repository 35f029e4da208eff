"""The sampler on its own, with stand-in stores: state codes, backend health and Redis error counts."""

from __future__ import annotations

import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from proxy.config.load import load_config
from proxy.observe.gauges import Sampler
from proxy.policy.breaker import State
from proxy.state.base import BreakerView
from tests.conftest import write_config


class FakeStore:
    """Answers ``view`` from a dict; ``backend_failures`` and ``backend_up`` as a Redis store reports them."""

    def __init__(self) -> None:
        self.states: dict[str, State] = {}
        self.backend_failures = 0
        self.backend_up = True

    def view(self, key: str) -> BreakerView:
        return BreakerView(key, self.states.get(key, State.CLOSED))


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_states_health_errors_and_in_flight_are_copied_into_the_gauges(tmp_path: Path) -> None:
    name = f"gauge{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, {name: {
        "url": "http://127.0.0.1:1", "routes": [{"name": "sms", "path": "/sms"},
                                                {"name": "nobreaker", "path": "/x", "breaker": False}]}}))
    breakers, limits = FakeStore(), FakeStore()
    in_flight = [0]
    sampler = Sampler(config, breakers, limits, lambda: in_flight[0])  # type: ignore[arg-type]
    errors_before = {store: value("resilience_proxy_state_backend_errors_total", store=store)
                     for store in ("breakers", "rate_limits")}

    for state, code in [(State.CLOSED, 0), (State.HALF_OPEN, 1), (State.OPEN, 2), (State.FORCED_OPEN, 3),
                        (State.DISABLED, 4)]:
        breakers.states[f"{name}/sms"] = state
        sampler.sample()
        assert value("resilience_proxy_breaker_state", upstream=name, route="sms") == code
        assert value("resilience_proxy_breaker_state", upstream=name, route="default") == 0
    assert REGISTRY.get_sample_value("resilience_proxy_breaker_state", {"upstream": name, "route": "nobreaker"}) \
        is None, "a route without a breaker has no state"

    breakers.backend_failures, limits.backend_failures, limits.backend_up, in_flight[0] = 3, 1, False, 7
    sampler.sample()
    breakers.backend_failures = 5
    sampler.sample()
    sampler.sample()
    assert value("resilience_proxy_state_backend_errors_total", store="breakers") - errors_before["breakers"] == 5
    assert value("resilience_proxy_state_backend_errors_total", store="rate_limits") - errors_before["rate_limits"] == 1
    assert value("resilience_proxy_state_backend_up") == 0
    assert value("resilience_proxy_in_flight_requests") == 7
