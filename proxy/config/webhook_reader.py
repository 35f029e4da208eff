"""A policy file's ``webhooks:`` section, read into :class:`~proxy.config.webhooks.Webhook` values.

Each provider needs its secret: a ``twilio`` webhook without ``twilio.auth_token``, or one with the
``google:`` section of another provider, is an error rather than a webhook that refuses (or, worse,
accepts) every request. Names and paths are unique across all policy files (:func:`check_unique`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxy.config import values as v
from proxy.config.policies import _positive_duration
from proxy.config.reader import Section
from proxy.config.webhooks import (
    DEFAULT_MAX_BODY,
    HMAC_ENCODINGS,
    KEY_SOURCES,
    MODES,
    ON_BACKEND_ERROR,
    PROVIDERS,
    Backoff,
    Dedupe,
    Delivery,
    GoogleAuth,
    HmacAuth,
    KeyPart,
    Retention,
    TwilioAuth,
    Webhook,
)
from proxy.config.yamltree import Mark
from proxy.errors import Problem

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_JSON_PATH = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")
_KEY_HELP = "write header:X-Name, form:Field or json:a.b"
_SECRETS = {"twilio": "auth_token", "google": "channel_token", "hmac": "secret"}


@dataclass(frozen=True)
class DeclaredWebhook:
    """A webhook with where its name and path were written, for the checks across files."""

    webhook: Webhook
    name_at: Mark
    path_at: Mark


def webhook_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"invalid webhook name '{value}' (letters, digits, '-', '_', '.'; at most 64)")
    return value


def webhook_path(value: Any) -> str:
    """An exact path such as ``/hooks/twilio/status``: the listener matches it whole."""
    text = value.strip() if isinstance(value, str) else ""
    if not text.startswith("/") or any(c in text for c in "?#* ") or "//" in text:
        raise ValueError(f"invalid path '{value}' (write an exact path such as /hooks/twilio/status)")
    return text.rstrip("/") or "/"


def http_url(value: Any) -> str:
    """An http(s) URL with a host and an optional path, kept as written (a trailing ``/`` matters to an app);
    no query (the provider's is kept), fragment or credentials."""
    v.upstream_url(value)
    return value.strip()


def key_part(value: Any) -> KeyPart:
    """``header:X-Name``, ``form:Field`` or ``json:a.b``."""
    text = value.strip() if isinstance(value, str) else ""
    source, _, name = text.partition(":")
    if source not in KEY_SOURCES or not name:
        raise ValueError(f"invalid key '{value}' ({_KEY_HELP})")
    if source == "header":
        v.header_name(name)
    elif source == "json" and not _JSON_PATH.fullmatch(name):
        raise ValueError(f"invalid key '{value}': json: takes a dotted path such as json:data.id")
    return KeyPart(source, name)  # type: ignore[arg-type]


def _positive_size(value: Any) -> int:
    size = v.size(value)
    if size <= 0:
        raise ValueError(f"must be greater than zero, not '{value}'")
    return size


def read_webhooks(top: Section, source: str) -> list[DeclaredWebhook]:
    """Every webhook under ``webhooks:`` of one policy file (absent: none)."""
    if not top.has("webhooks"):
        top.node("webhooks")
        return []
    declared = []
    for name, section in top.items("webhooks"):
        try:
            webhook_name(name)
        except ValueError as exc:
            section.error(section.at, section.path, str(exc))
        webhook = _read_webhook(name, section, source)
        if webhook is not None:
            declared.append(DeclaredWebhook(webhook, section.at, section.mark_of("path")))
    return declared


def _read_webhook(name: str, s: Section, source: str) -> Webhook | None:
    path = s.get("path", webhook_path)
    deliver_to = s.get("deliver_to", http_url)
    provider = s.get("provider", v.one_of(*PROVIDERS))
    auth = {key: _read_auth(s, key, provider) for key in _SECRETS}
    webhook = Webhook(
        name=name,
        path=path,
        deliver_to=deliver_to,
        provider=provider,
        twilio=auth["twilio"],
        google=auth["google"],
        hmac=auth["hmac"],
        mode=s.get("mode", v.one_of(*MODES), "queue"),
        dedupe=_read_dedupe(s.section("dedupe")),
        delivery=_read_delivery(s.section("delivery")),
        retention=_read_retention(s.section("retention")),
        org=s.get("org", key_part, None),
        on_backend_error=s.get("on_backend_error", v.one_of(*ON_BACKEND_ERROR), "passthrough"),
        max_body=s.get("max_body", _positive_size, DEFAULT_MAX_BODY),
        source=source,
    )
    s.finish()
    if None in (path, deliver_to, provider):
        return None
    return webhook


def _read_auth(parent: Section, key: str, provider: str | None) -> Any:
    """The ``twilio``/``google``/``hmac`` section: required for its provider, refused for any other."""
    present = parent.has(key)
    parent.node(key)
    if provider != key:
        if present and provider is not None:
            parent.error(parent.mark_of(key), f"{parent.path}.{key}", f"only applies with provider: {key}")
        return None
    if not present:
        parent.error(parent.at, f"{parent.path}.{key}", f"is required for provider: {key} (it holds the "
                     f"{_SECRETS[key]})")
        return None
    s = parent.section(key)
    secret = _secret(s, _SECRETS[key])
    if key == "twilio":
        auth: Any = TwilioAuth(secret, s.get("public_url", http_url))
    elif key == "google":
        auth = GoogleAuth(secret)
    else:
        auth = HmacAuth(secret, s.get("header", v.header_name), s.get("encoding", v.one_of(*HMAC_ENCODINGS), None))
    s.finish()
    return auth


def _secret(s: Section, key: str) -> str:
    """A secret must not be empty: an unset ``${VAR:-}`` would otherwise verify against the empty key."""
    value = s.get(key, str)
    if value is not None and not value.strip():
        s.error(s.mark_of(key), f"{s.path}.{key}", "is empty (is its environment variable set?)")
    return value or ""


def _read_dedupe(s: Section) -> Dedupe:
    dedupe = Dedupe(window=s.get("window", _positive_duration, Dedupe.window),
                    key=s.list_of("key", key_part))
    s.finish()
    return dedupe


def _read_delivery(s: Section) -> Delivery:
    backoff_section = s.section("backoff")
    backoff = Backoff(
        initial=backoff_section.get("initial", v.duration, Backoff.initial),
        multiplier=backoff_section.get("multiplier", v.number_at_least_one, Backoff.multiplier),
        max=backoff_section.get("max", v.duration, Backoff.max),
    )
    if backoff.max < backoff.initial:
        backoff_section.error(backoff_section.mark_of("max"), f"{backoff_section.path}.max",
                              f"must be at least initial ({backoff.initial:g}s)")
    backoff_section.finish()
    delivery = Delivery(
        attempts=s.get("attempts", v.positive_int, Delivery.attempts),
        backoff=backoff,
        timeout=s.get("timeout", _positive_duration, Delivery.timeout),
        concurrency=s.get("concurrency", v.positive_int, Delivery.concurrency),
    )
    s.finish()
    return delivery


def _read_retention(s: Section) -> Retention:
    retention = Retention(delivery_log=s.get("delivery_log", _positive_duration, Retention.delivery_log))
    s.finish()
    return retention


def check_unique(declared: list[DeclaredWebhook], problems: list[Problem]) -> None:
    """Names and paths are unique across every policy file: each names one queue and one route in."""
    names: dict[str, DeclaredWebhook] = {}
    paths: dict[str, DeclaredWebhook] = {}
    for d in declared:
        name, path = d.webhook.name, d.webhook.path
        if name in names:
            first = names[name].name_at
            problems.append(Problem(d.name_at.file, d.name_at.line, d.name_at.column, f"webhooks.{name}",
                                    f"defined twice (first at {first.file}:{first.line})"))
        elif path in paths:
            problems.append(Problem(d.path_at.file, d.path_at.line, d.path_at.column, f"webhooks.{name}.path",
                                    f"'{path}' is already the path of webhook '{paths[path].webhook.name}'"))
        names.setdefault(name, d)
        paths.setdefault(path, d)
