"""A throwaway Prometheus server (Debian's ``prometheus`` package) on a free loopback port, for tests that need
real PromQL over real scrapes.

Nothing outlives the test: the TSDB lives in the test's directory. The server reads its scrape targets within
about 5 s of starting (its discovery updates are throttled), so callers poll for the first samples.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from tests.conftest import free_port

PROMETHEUS_MISSING = "prometheus not installed (Debian package 'prometheus'; .ci/run installs it)"


class PrometheusServer:
    def __init__(self, directory: Path, scrape_interval: str = "1s") -> None:
        """Skips the test when Debian's ``prometheus`` is not installed."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(PROMETHEUS_MISSING)
        self.binary = binary
        self.directory = directory
        self.scrape_interval = scrape_interval
        self.port = 0
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, targets: list[str], deadline: float = 30.0) -> None:
        """Scrape ``targets`` (host:port, ``/metrics``) every ``scrape_interval``; return once ``/-/ready`` answers.

        The port is chosen before Prometheus binds it, so another process may take it in between: then it is
        started again on another port (three tries)."""
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": "resilience-proxy", "static_configs": [{"targets": targets}]}],
        }))
        (self.directory / "tsdb").mkdir(exist_ok=True)
        end = time.monotonic() + deadline
        for attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
            if self._wait_ready(end):
                return
            if "address already in use" not in self.log or attempt == 2:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: {self.log[-2000:]}")

    def _wait_ready(self, end: float) -> bool:
        """True once ready; False if it exited (the caller reads why in the log)."""
        assert self.process is not None
        while self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"prometheus not ready in time: {self.log[-2000:]}")
            time.sleep(0.05)
        return False

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, an AssertionError naming the problem otherwise."""
        url = f"{self.url}/api/v1/{path}?{urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
        assert answer.get("status") == "success", f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the server's now: the vector's samples (a scalar as one sample without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
