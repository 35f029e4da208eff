"""The sidecar variants the bench can compare, and the config each one runs with.

Every variant routes ``/bench`` to the same nginx; they differ only in their policies and state
backend, so the gap between two variants is what those cost:

- ``plain``: no policies (``breaker: false``, ``retry: false``), target ``sidecar``; the one the issue 2
  targets use.
- ``breakers``: a breaker per route, state in process memory.
- ``breakers-redis``: the same breakers, state shared in Redis (the runner's own redis-server).
- ``retries``: retries on (3 attempts, 1 s / 2 s / 4 s; replay buffering for bodies), no breaker. On a
  healthy upstream nothing is retried, so this measures what being ready to retry costs.
- ``limits-redis``: three rate limits on the upstream (``org``, ``ip`` and ``global`` keys), buckets in
  Redis, no breaker, no retries. The amounts are so large that nothing is ever rejected: this measures
  what checking costs (one EVALSHA per request for all three), not what rejecting does.
- ``policies``: what a production route runs (issue 16): breaker, retries and three rate limits (keys
  ``ip``, ``ip`` and ``global``, as the issue measured them: a per-second and a per-minute limit on the
  client address, and one on the whole upstream), state in memory, access log on. Nothing trips, is
  retried or is rejected: this is what the checks cost on a healthy upstream.
- ``policies-redis``: the same on Redis (the breaker's view local, the three limits one EVALSHA).
- ``shipped``: ``plain`` as the image and ``inject`` run it: access log on (the config's default) and,
  as the image of 0.1.0 set it, ``PROMETHEUS_MULTIPROC_DIR`` pointing at an existing directory (the
  runner creates one per run). The gap to ``plain`` is what running as shipped costs.

Pure text generation, so the tests can load the result with the sidecar's own config loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    """One sidecar configuration under test and the target name the report shows it under."""

    name: str
    target: str
    breakers: bool
    backend: str  # "memory" or "redis"
    retries: bool = False
    limits: tuple[tuple[str, str, int, str], ...] = ()
    """(name, key, limit, per) of each rate limit."""
    access_log: bool | None = None  # None: as --access-log says
    multiproc_env: bool = False  # started with PROMETHEUS_MULTIPROC_DIR set

    @property
    def uses_redis(self) -> bool:
        return self.backend == "redis"


# One limit per key kind the bench's requests carry (loads.HEADERS: X-Org-Id, X-Forwarded-For), at 1e9 calls
# per second: at most ~7,000 req/s reach the sidecar, so no bucket ever comes near rejecting.
LIMIT_AMOUNT = 1_000_000_000
ORG_IP_GLOBAL = (
    ("per-org", "org", LIMIT_AMOUNT, "1s"),
    ("per-ip", "ip", LIMIT_AMOUNT, "1s"),
    ("account", "global", LIMIT_AMOUNT, "1s"),
)
# Two limits on the client address (a second's burst and a minute's total) and one on the upstream.
IP_IP_GLOBAL = (
    ("per-ip", "ip", LIMIT_AMOUNT, "1s"),
    ("per-ip-minute", "ip", 60 * LIMIT_AMOUNT, "1m"),
    ("account", "global", LIMIT_AMOUNT, "1s"),
)

VARIANTS = {
    v.name: v
    for v in (
        Variant("plain", "sidecar", breakers=False, backend="memory"),
        Variant("breakers", "sidecar+breakers", breakers=True, backend="memory"),
        Variant("breakers-redis", "sidecar+breakers-redis", breakers=True, backend="redis"),
        Variant("retries", "sidecar+retries", breakers=False, backend="memory", retries=True),
        Variant("limits-redis", "sidecar+limits-redis", breakers=False, backend="redis", limits=ORG_IP_GLOBAL),
        Variant("policies", "sidecar+policies", breakers=True, backend="memory", retries=True, limits=IP_IP_GLOBAL,
                access_log=True),
        Variant("policies-redis", "sidecar+policies-redis", breakers=True, backend="redis", retries=True,
                limits=IP_IP_GLOBAL, access_log=True),
        Variant("shipped", "sidecar+shipped", breakers=False, backend="memory", access_log=True, multiproc_env=True),
    )
}
# Written out even where it equals the sidecar's default, so a change of default can't change the bench.
BREAKER_YAML = "    breaker:\n      consecutive_failures: 3\n      open_for: 30s\n"
RETRY_YAML = "    retry:\n      attempts: 3\n      backoff: {initial: 1s, multiplier: 2, max: 4s}\n"
# Variant i listens on the base ports plus PORT_STEP * i.
PORT_STEP = 10


def parse_variants(text: str) -> list[Variant]:
    """``plain,breakers`` -> variants in that order; unknown or repeated names are a ValueError."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown sidecar variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"sidecar variant listed twice in '{text}'")
    if not names:
        raise ValueError("no sidecar variant given")
    return [VARIANTS[n] for n in names]


def ports_of(index: int, sidecar_port: int, admin_port: int) -> tuple[int, int]:
    """Data and admin port of the variant at ``index`` in the --sidecars list."""
    return sidecar_port + PORT_STEP * index, admin_port + PORT_STEP * index


def policy_yaml(variant: Variant, upstream_port: int) -> str:
    """The one policy file: /bench to nginx, with the variant's breaker and retries (or ``false``) and limits."""
    breaker = BREAKER_YAML if variant.breakers else "    breaker: false\n"
    retry = RETRY_YAML if variant.retries else "    retry: false\n"
    limits = limits_yaml(variant.limits)
    return (
        f"upstreams:\n  bench:\n    url: http://127.0.0.1:{upstream_port}\n    prefix: /bench\n"
        + breaker + retry + limits
    )


def limits_yaml(limits: tuple[tuple[str, str, int, str], ...]) -> str:
    """The ``rate_limits:`` list of a route (empty text for none)."""
    if not limits:
        return ""
    return "    rate_limits:\n" + "".join(
        f"      - {{name: {name}, key: {key}, limit: {limit}, per: {per}}}\n" for name, key, limit, per in limits
    )


def main_yaml(variant: Variant, port: int, admin_port: int, access_log: bool, redis_port: int | None,
              redis_url: str | None = None, admin_token: str | None = None) -> str:
    """The process config: listeners, the variant's state backend, logging, policies/. ``redis_url``
    (a cluster's, say) replaces the one ``redis_port`` makes; ``admin_token`` allows admin mutations."""
    if variant.uses_redis:
        if redis_url is None and redis_port is None:
            raise ValueError(f"variant {variant.name} needs a redis port")
        url = redis_url or f"redis://127.0.0.1:{redis_port}/0"
        state = f"state:\n  backend: redis\n  redis_url: '{url}'\n"
    else:
        state = "state:\n  backend: memory\n"
    token = f"  token: {admin_token}\n" if admin_token else ""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"admin:\n  listen: 127.0.0.1:{admin_port}\n"
        + token
        + state
        + f"log:\n  level: warning\n  access: {'true' if access_log else 'false'}\n"
        "policies: [policies/]\n"
    )


def write_config(
    confdir: Path,
    variant: Variant,
    *,
    port: int,
    admin_port: int,
    upstream_port: int,
    access_log: bool,
    redis_port: int | None = None,
    redis_url: str | None = None,
    admin_token: str | None = None,
) -> Path:
    """Write ``confdir/sidecar.yaml`` and ``confdir/policies/bench.yaml``; return the former. ``access_log``
    applies to variants that do not set their own."""
    access_log = access_log if variant.access_log is None else variant.access_log
    (confdir / "policies").mkdir(parents=True, exist_ok=True)
    (confdir / "policies" / "bench.yaml").write_text(policy_yaml(variant, upstream_port))
    conf = confdir / "sidecar.yaml"
    conf.write_text(main_yaml(variant, port, admin_port, access_log, redis_port, redis_url, admin_token))
    return conf
