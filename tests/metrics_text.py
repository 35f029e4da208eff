"""Reading a Prometheus text exposition back into numbers, and linting it with promtool."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL_MISSING = "promtool not installed (Debian package 'prometheus'; .ci/run installs it)"


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``; 0 when absent."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample ``name`` whose labels include ``labels``, as (labels, value)."""
    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]


def typed_names(text: str) -> set[str]:
    """The family names a scrape declares in its ``# TYPE`` lines (a counter under its sample name, ``..._total``)."""
    return set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` (skipping the test when it is not installed); the caller checks the result."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def assert_promtool_accepts(text: str) -> None:
    """``promtool check metrics``: names, types, units and help text of a real scrape."""
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, f"promtool check metrics failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
