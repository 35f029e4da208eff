"""The shipped presets (``policies/*.yaml``) aimed at a loopback fake, with test-sized backoffs.

Only the upstream URL and the retry waits change, so the tests prove the presets themselves:
their routes, breakers, retry conditions and error formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FAST_BACKOFF = {"initial": "50ms", "multiplier": 1, "max": "100ms", "jitter": 0}


def preset(file: str, name: str, url: str, **overrides: Any) -> dict[str, dict[str, Any]]:
    """Upstream ``name`` from ``policies/<file>``, sent to ``url``, retrying after 50 ms."""
    upstream = _on_keys(yaml.safe_load((POLICIES / file).read_text()))["upstreams"][name]
    upstream["url"] = url
    upstream["retry"]["backoff"] = FAST_BACKOFF
    upstream.update(overrides)
    return {name: upstream}


def _on_keys(node: Any) -> Any:
    """PyYAML reads the key ``on`` as YAML 1.1's boolean; the sidecar's YAML 1.2 reader does not."""
    if isinstance(node, dict):
        return {("on" if key is True else key): _on_keys(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_on_keys(item) for item in node]
    return node
