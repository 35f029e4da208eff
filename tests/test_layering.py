"""The pure layers must stay pure: importing them loads no network, Redis or telemetry library.

Run in a fresh interpreter per module, as aiohttp's own test_circular_imports does, so that
what another test imported cannot hide a violation.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = ["proxy.errors", "proxy.error_formats", "proxy.clock", "proxy.events", "proxy.config.model", "proxy.config.values",
                "proxy.config.yamltree", "proxy.config.reader", "proxy.config.policies", "proxy.config.load",
                "proxy.config.lint", "proxy.config.schema",
                "proxy.policy.breaker", "proxy.policy.classify", "proxy.policy.routes", "proxy.policy.retry",
                "proxy.reload"]
IO_LIBRARIES = ["asyncio", "aiohttp", "redis", "prometheus_client", "sentry_sdk", "slack_sdk"]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_library(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "", f"{module} pulled in {result.stdout.strip()}"
