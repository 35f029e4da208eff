"""A JSON Schema (draft 2020-12) of the policy files, for editors (yaml-language-server) and CI.

The loader (:mod:`proxy.config.load`, :mod:`proxy.config.policies`, :mod:`proxy.config.limits`) stays
the authority: it checks what a schema cannot (cross-field rules, files that must exist, capture
names). The schema mirrors its keys and value shapes; ``tests/config/test_schema.py`` keeps the two
from drifting: it records every key the loader asks for and compares that set with the schema's, and
checks that every policy the loader accepts validates, and that a misspelt key fails both.

``${VAR}`` is expanded before the loader parses a value, so string values that hold one are accepted
as they are written.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.config import values as v
from proxy.config.limits import _KEYS
from proxy.config.model import ERROR_FORMATS
from proxy.config.policies import _BREAKER_FIELDS, _positive_duration, _whole_seconds
from proxy.config.policy_values import CONDITIONS, BackendError, MissingKey
from proxy.config.webhooks import HMAC_ENCODINGS, MODES, ON_BACKEND_ERROR, PROVIDERS

Schema = dict[str, Any]
SCHEMA_ID = "urn:resilience-proxy:policy.schema.json"
"""An identifier, not a download location: editors find the schema by the file's modeline."""
_ENV = r"|\$\{"


def _string(pattern: str, description: str, example: str) -> Schema:
    return {"type": "string", "pattern": f"^(?:{pattern})${_ENV}", "description": description, "examples": [example]}


def duration(description: str) -> Schema:
    return _string(r"\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*", description + " A duration: 250ms, 30s, 15m, 1h, 7d or 1m30s.",
                   "1s")


def size(description: str) -> Schema:
    text = _string(r"\s*\d+\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", "", "1MiB")
    return {"description": description + " Bytes, or a size such as 512KiB or 10MiB.", "examples": ["1MiB"],
            "anyOf": [{"type": "integer", "minimum": 0}, {k: text[k] for k in ("type", "pattern")}]}


def fraction(description: str) -> Schema:
    return {"description": description + " A share: 50% or 0.5.", "examples": ["20%"],
            "anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
                      {"type": "string", "pattern": r"^\s*(100(\.0*)?|\d{1,2}(\.\d*)?)%\s*$"}]}


def integer(minimum: int, description: str) -> Schema:
    return {"type": "integer", "minimum": minimum, "description": description, "examples": [max(minimum, 1)]}


def number(minimum: float, description: str) -> Schema:
    return {"type": "number", "minimum": minimum, "description": description, "examples": [max(minimum, 1)]}


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description, "examples": [True]}


def text(description: str, example: str = "x") -> Schema:
    return {"type": "string", "minLength": 1, "description": description, "examples": [example]}


def one_or_list(item: Schema, description: str) -> Schema:
    """The loader's ``list_of`` also takes a single value for a one-item list."""
    return {"description": description, "examples": [[item["examples"][0]]],
            "anyOf": [{"type": "array", "items": item}, item]}


def obj(description: str, properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties,
                      "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def off_or(schema: Schema, off: str) -> Schema:
    """``breaker: false`` / ``retry: false``, or a mapping."""
    return {"description": schema["description"] + f" `false`: {off}.",
            "anyOf": [{"const": False}, {k: val for k, val in schema.items() if k != "description"}]}


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


STATUS: Schema = {"type": "integer", "minimum": 100, "maximum": 599, "description": "An HTTP status.",
                  "examples": [503]}
STATUS_SET: Schema = {"description": "A status (503) or a class (5xx).", "examples": ["5xx"],
                      "anyOf": [{k: val for k, val in STATUS.items() if k != "description"},
                                {"type": "string", "pattern": r"^\s*[1-5][xX][xX]\s*$"}]}
HEADER = _string(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", "A header name.", "X-Tenant")
METHOD = {"type": "string", "description": "An HTTP method (any case).", "examples": ["POST"],
          "pattern": "^(" + "|".join(_any_case(m) for m in sorted(v._METHODS)) + ")$"}


def _from_parser(parse: Any, description: str) -> Schema:
    """Breaker fields are declared once, in the loader's table; their schemas follow from the parser."""
    if parse is v.non_negative_int:
        return integer(0, description)
    if parse is v.positive_int:
        return integer(1, description)
    if parse is v.fraction:
        return fraction(description)
    if parse is v.number_at_least_one:
        return number(1, description)
    if parse in (v.duration, _positive_duration):
        return duration(description)
    if parse is _whole_seconds:
        return _string(r"\s*(\d+(s|m|h))+\s*", description + " Whole seconds: 60s, 5m.", "60s")
    raise LookupError(f"no schema for the parser {parse!r}")


_BREAKER_TEXT = {
    "consecutive_failures": "Open after this many failures in a row (0: off).",
    "failure_rate": "Open when this share of calls in the window failed (0: off).",
    "window": "The sliding window failure_rate is measured over.",
    "min_calls": "Calls in the window before failure_rate may open the breaker.",
    "slow_call": "A call slower than this counts as a failure (0s: off).",
    "open_for": "How long the breaker stays open before probing.",
    "open_for_max": "Cap of the open time as failed probes multiply it.",
    "open_multiplier": "Each failed probe multiplies the open time by this.",
    "jitter": "Open times vary by up to this share either way.",
    "half_open_probes": "Calls let through to probe a recovering upstream.",
}

BREAKER = off_or(obj("A circuit breaker; a route's overrides the keys it names of its upstream's.",
                     {name: _from_parser(parse, _BREAKER_TEXT[name]) for name, parse in _BREAKER_FIELDS.items()}),
                 "no breaker")

RETRY = off_or(obj("When to try an attempt again; never repeats a side effect unless told it is safe.", {
    "attempts": integer(0, "Retries after the first try (0: never)."),
    "backoff": obj("Wait before retry n: initial * multiplier^(n-1), capped at max, with jitter.", {
        "initial": duration("The first wait."),
        "multiplier": number(1, "Each wait is the last one times this."),
        "max": duration("The longest wait."),
        "jitter": fraction("Each wait varies by up to this share either way."),
    }),
    "on": one_or_list({"description": "A retry condition.", "examples": ["timeout"],
                       "anyOf": [{"enum": sorted(CONDITIONS)}, {k: val for k, val in STATUS.items() if k != "description"}]},
                      "Conditions to retry on: connect_error, timeout, reset, rate_limited (429 or Google's "
                      "throttling 403), or statuses."),
    "deadline": duration("Every attempt and wait must fit in this."),
    "per_try_timeout": duration("Each attempt's timeout (default: the upstream's timeout)."),
    "retry_after_max": duration("A longer Retry-After is not waited for."),
    "idempotent": boolean("POST/PATCH on this route are safe to repeat."),
    "not_processed": one_or_list(STATUS, "Statuses proving a POST/PATCH was not processed (may be repeated)."),
    "idempotency_header": HEADER | {"description": "A request with this header may be repeated."},
    "idempotent_when_body_has": text("A POST/PATCH whose JSON or form body has this field may be repeated.", "id"),
    "on_duplicate": {"enum": ["relay", "fetch"], "examples": ["fetch"], "description": "A 409 duplicate on a "
                     "retry: relay it, or fetch the created resource (GET <path>/<id>) and relay that."},
    "budget": obj("Retries as a share of first tries, fleet-wide per upstream.", {
        "ratio": fraction("Retries allowed per first try (at most 100%)."),
        "min_per_second": number(0, "Retries always allowed per second, whatever the ratio."),
    }),
    "replay_limit": size("Bodies up to this size are kept for replay; larger ones are never retried."),
}), "no retries")

FAILURE_STATUSES = one_or_list(STATUS_SET, "Upstream statuses that count as breaker failures (429 never does).")

_OVERRIDE = obj("This key value's own rate.", {
    "limit": integer(1, "Calls per `per`."),
    "per": duration("The period."),
    "burst": integer(0, "Calls that may come early."),
}, ("limit",))

LIMIT = obj("A rate limit (GCRA): `limit` per `per` at a steady pace, `burst` calls may come early.", {
    "name": _string(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "Unique per upstream; half of a bucket's identity.", "x"),
    "key": _string(r"\s*(org|ip|global|basic_auth_user|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"
                   r"path:[A-Za-z_][A-Za-z0-9_]*)\s*", f"What is counted separately: {_KEYS}.", "global"),
    "limit": integer(1, "Calls per `per`."),
    "per": duration("The period."),
    "burst": integer(0, "Calls that may come early (default: limit - 1)."),
    "shadow": boolean("Count and report, never reject."),
    "on_backend_error": {"enum": [m.value for m in BackendError], "description": "While Redis is down.",
                         "examples": ["allow"]},
    "local_share": fraction("With on_backend_error: allow, each process's share of the limit while Redis is down."),
    "on_missing_key": {"enum": [m.value for m in MissingKey], "description": "When a request lacks the key.",
                       "examples": ["anonymous"]},
    "overrides": {"type": "object", "description": "Rates for particular key values: a number, or a mapping.",
                  "examples": [{"acme": {"limit": 1}}],
                  "additionalProperties": {"anyOf": [integer(1, "Calls per `per`."), _OVERRIDE]}},
    "honor_upstream_retry_after": boolean("A 429 from the upstream holds the call's buckets for its Retry-After."),
}, ("name", "key", "limit", "per"))

RATE_LIMITS = {"type": "array", "items": LIMIT, "description": "Every limit that applies must pass."}

ROUTE = obj("A named slice of an upstream's traffic; the first route that matches wins.", {
    "name": _string(r".+", "Unique per upstream; 'default' is the route for unmatched requests.", "x"),
    "methods": one_or_list(METHOD, "Methods this route takes (default: any)."),
    "path": _string(r"/[^?]*", "Pattern on the path after the prefix: {name} captures, * a segment, a final ** "
                    "the rest.", "/a/{id}"),
    "body": {"type": "object", "description": "Form or JSON body fields and the glob each must match.",
             "examples": [{"To": "whatsapp:*"}], "additionalProperties": text("A glob.", "whatsapp:*")},
    "breaker": BREAKER,
    "retry": RETRY,
    "failure_statuses": FAILURE_STATUSES,
    "rate_limits": RATE_LIMITS,
}, ("name",))

UPSTREAM = obj("A third-party API reached through `prefix` on the sidecar.", {
    "url": _string(r"\s*https?://[^\s/?#@]+(/[^?#\s]*)?\s*", "scheme://host[:port][/base/path].",
                   "https://api.example.com"),
    "prefix": _string(r"\s*/[^?# ]*", "Path prefix on the sidecar (default: /<name>).", "/api"),
    "timeout": duration("Per attempt: until the response head, and the longest pause in a body."),
    "connect_timeout": duration("Connecting, TLS included."),
    "max_request_body": size("Larger request bodies are refused with 413."),
    "max_connections": integer(1, "Open connections to this upstream."),
    "ca_bundle": text("CA certificates (PEM) trusted in addition to the system's, relative to the policy file.",
                      "ca.pem"),
    "forwarded_headers": boolean("Send X-Forwarded-* (off: they tell a third party internal addresses)."),
    "strip_headers": one_or_list(HEADER, "Request headers never sent to this upstream."),
    "error_format": {"enum": list(ERROR_FORMATS), "examples": ["twilio"], "description": "Shape of the errors the "
                     "sidecar writes itself: generic, or like the vendor's (twilio, google) so its SDK raises "
                     "its usual exception."},
    "breaker": BREAKER,
    "retry": RETRY,
    "failure_statuses": FAILURE_STATUSES,
    "routes": {"type": "array", "items": ROUTE, "description": "Tried in order; the first that matches wins."},
    "rate_limits": RATE_LIMITS,
}, ("url",))


_KEY_PART = r"\s*(header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|form:.+|json:[^.\s]+(\.[^.\s]+)*)\s*"
_HTTP_URL = r"\s*https?://[^\s/?#@]+(/[^?#\s]*)?\s*"

WEBHOOK = obj("An inbound webhook on the webhooks listener: verified, deduplicated, queued, delivered to the app.", {
    "path": _string(r"\s*/[^?#* ]*", "Exact path on the webhooks listener.", "/hooks/twilio/status"),
    "deliver_to": _string(_HTTP_URL, "The app's http(s) URL events are delivered to.", "http://127.0.0.1:3000/hook"),
    "provider": {"enum": list(PROVIDERS), "examples": ["twilio"], "description": "How a request is verified: "
                 "twilio (X-Twilio-Signature), google (X-Goog-Channel-Token), hmac (a header with HMAC-SHA256 of "
                 "the body), none."},
    "twilio": obj("provider: twilio.", {
        "auth_token": text("The account's auth token (HMAC-SHA1 key).", "twilio-auth-token"),
        "public_url": _string(_HTTP_URL, "The URL Twilio calls, as configured in its console (never the Host "
                              "header).", "https://app.example.com/hooks/twilio/status"),
    }, ("auth_token", "public_url")),
    "google": obj("provider: google.", {
        "channel_token": text("The token given to watch, returned in X-Goog-Channel-Token.", "channel-token"),
    }, ("channel_token",)),
    "hmac": obj("provider: hmac (GitHub / Stripe style).", {
        "secret": text("The shared secret.", "shared-secret"),
        "header": HEADER | {"description": "The header holding the signature (an optional sha256= prefix).",
                            "examples": ["X-Hub-Signature-256"]},
        "encoding": {"enum": list(HMAC_ENCODINGS), "examples": ["hex"],
                     "description": "The signature's encoding (default: either)."},
    }, ("secret", "header")),
    "mode": {"enum": list(MODES), "examples": ["queue"], "description": "queue: answer at once; sync: forward at "
             "once and answer with the app's reply (queued if the app fails)."},
    "dedupe": obj("Repeats within the window are answered like the original and not queued again.", {
        "window": duration("How long a key (and the payload) is kept (default 24h)."),
        "key": one_or_list(_string(_KEY_PART, "header:X, form:F or json:a.b.", "header:X-Request-Id"),
                           "The parts of the dedupe key (default: the provider's)."),
    }),
    "delivery": obj("Delivery to deliver_to.", {
        "attempts": integer(1, "Tries in all; then dead_letter (default 8)."),
        "backoff": obj("Wait before try n+1: initial * multiplier^(n-1), capped at max.", {
            "initial": duration("The first wait (default 1s)."),
            "multiplier": number(1, "Each wait is the last one times this (default 2)."),
            "max": duration("The longest wait (default 5m)."),
        }),
        "timeout": duration("Per attempt (default 10s)."),
        "concurrency": integer(1, "Deliveries in flight per webhook per replica (default 4)."),
    }),
    "retention": obj("How long the delivery log keeps entries.", {
        "delivery_log": duration("Default 7d."),
    }),
    "org": _string(_KEY_PART, "Where the event's organisation is read: form:F, json:a.b or header:X.",
                   "form:AccountSid"),
    "on_backend_error": {"enum": list(ON_BACKEND_ERROR), "examples": ["passthrough"], "description": "The store "
                         "is down: passthrough (verify, forward, answer with the app's reply) or reject (503)."},
    "max_body": size("Larger requests are refused with 413 (default 1MiB)."),
}, ("path", "deliver_to", "provider"))
WEBHOOK["allOf"] = [
    {"if": {"properties": {"provider": {"const": name}}, "required": ["provider"]},
     "then": {"required": [name] if name != "none" else [],
              "properties": {other: False for other in ("twilio", "google", "hmac") if other != name}}}
    for name in PROVIDERS
]


def policy_schema() -> Schema:
    """The schema of one policy file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "resilience-proxy policy file",
        "description": "Upstreams with their breakers, retries, routes and rate limits, and inbound webhooks "
                       "(README: Configuration).",
        "type": "object",
        "properties": {"upstreams": {"type": "object", "description": "Upstreams by name.",
                                     "additionalProperties": UPSTREAM},
                       "webhooks": {"type": "object", "description": "Inbound webhooks by name.",
                                    "additionalProperties": WEBHOOK}},
        "minProperties": 1,
        "additionalProperties": False,
    }


ADDRESS = _string(r"\s*(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}\s*", "host:port or [ipv6]:port.", "127.0.0.1:0")


def config_schema() -> Schema:
    """The schema of the process config (``config.example.yaml``): listeners, state, alerts, errors, policies."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.replace("policy", "config"),
        "title": "resilience-proxy process config",
        **obj("Listeners, shared state, alerts, error reports and the policy files (README: Configuration).", {
            "listen": ADDRESS | {"description": "Where applications send their calls (default 127.0.0.1:8080)."},
            "admin": obj("The admin port: health, metrics, breaker overrides.", {
                "listen": ADDRESS | {"description": "Default 127.0.0.1:9901; must differ from listen."},
                "token": {"type": "string", "description": "Bearer token for admin mutations (empty: refused).",
                          "examples": ["${ADMIN_TOKEN:-}"]},
            }),
            "state": obj("Where breakers and rate limits live.", {
                "backend": {"enum": ["memory", "redis"], "description": "memory: per process; redis: fleet-wide.",
                            "examples": ["redis"]},
                "redis_url": text("redis://host:port/db (one Redis), rediss:// (TLS), "
                                  "redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db] (Sentinel), "
                                  "or redis+cluster://[:password@]host1:6379,host2:6379 (Redis Cluster seed nodes).",
                                  "redis://127.0.0.1:6379/0"),
                "redis_timeout": duration("Per Redis command, at most 1s."),
                "key_prefix": text("Prefix of every Redis key.", "rp:"),
                "required": boolean("Readiness fails while Redis is unreachable."),
            }),
            "log": obj("Logging.", {
                "level": {"enum": ["debug", "info", "warning", "error"], "description": "Log level.",
                          "examples": ["info"]},
                "access": boolean("One JSON line per request."),
            }),
            "alerts": obj("Alerts.", {"slack": obj("Slack alerts; an empty token turns them off.", {
                "token": {"type": "string", "description": "Bot token (xoxb-...).", "examples": ["xoxb-x"]},
                "channel": {"type": "string", "description": "Channel id or #name.", "examples": ["C123"]},
                "base_url": _string(r"\s*https?://\S+", "Slack Web API base URL.", "https://slack.com/api/"),
                "flap_interval": duration("At most one message per breaker per this long."),
                "error_rate": fraction("Alert when an upstream's failures cross this share (0: off)."),
                "error_window": duration("The window error_rate is measured over."),
                "error_min_requests": integer(1, "Requests in the window before error_rate applies."),
                "webhook_backlog_age": duration("Alert when a webhook's oldest undelivered event is older (0: off)."),
                "queue_size": integer(1, "Messages waiting for Slack; more are dropped."),
            })}),
            "errors": obj("Error reports.", {"sentry": obj("Sentry; an empty dsn turns it off.", {
                "dsn": {"type": "string", "description": "https://<key>@<host>/<project id>.",
                        "examples": ["https://k@sentry.example.com/1"]},
                "environment": text("Sentry environment.", "production"),
                "release": text("Sentry release.", "1.0"),
            })}),
            "org_header": HEADER | {"description": "Header naming the calling organisation (key: org)."},
            "client_ip_header": HEADER | {"description": "Header naming the end user's address (key: ip)."},
            "shutdown_grace": duration("Longest wait for in-flight requests after SIGTERM."),
            "webhooks": obj("Inbound webhooks (defined in policy files).", {
                "listen": ADDRESS | {"description": "The listener providers call in on, e.g. 0.0.0.0:8081 "
                                                    "(absent: off). Restart-only."}}),
            "policies": one_or_list(text("A policy file or directory, relative to this file.", "policies/"),
                                    "Policy files or directories (default: policies/)."),
        }),
    }


def render(schema: Schema) -> str:
    """The committed text of ``policies/policy.schema.json``: stable, so a diff shows real changes."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
