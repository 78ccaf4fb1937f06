"""Helpers for the live dashboard test: a real Prometheus server in a child process, scraping a
Prometheus text endpoint, bounded polling (not a test module)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Polls ``check`` until it returns something truthy; fails naming ``what`` on timeout.
    HTTP errors count as "not yet" (a server that is still starting)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def scrape(url: str) -> dict[str, float]:
    """Sample name → summed value, from one scrape of a Prometheus text endpoint."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def grafana_regex_escape(value: str) -> str:
    """A label value as Grafana puts it into a PromQL regex matcher: regex metacharacters get
    a backslash, itself escaped for the PromQL string literal."""
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", value)


class PrometheusServer:
    """``prometheus`` on 127.0.0.1 (a free port) scraping one target as job ``job``."""

    def __init__(self, binary: str, workdir: Path, *, target: str, job: str, interval_ms: int):
        config = workdir / "prometheus.yml"
        interval = f"{interval_ms}ms"
        scrape_config = {"job_name": job, "static_configs": [{"targets": [target]}]}
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "scrape_timeout": interval},
                    "scrape_configs": [scrape_config],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            return self.process.poll() is not None or httpx.get(f"{self.url}/-/ready").is_success

        wait_until(ready, START_TIMEOUT_S, "Prometheus to be ready")
        assert self.process.poll() is None, self.log.read_text()

    def wait_target_active(self) -> None:
        """Until Prometheus scrapes its target (up or not yet). It hands new targets to its
        scrapers only every 5 s, so without this a short run could be over before the first
        scrape."""

        def active() -> bool:
            return bool(self.api("targets")["activeTargets"])

        wait_until(active, START_TIMEOUT_S, "Prometheus to pick up its target")

    def api(self, path: str, **params: Any) -> Any:
        """``data`` of a successful ``/api/v1/<path>`` answer (anything else fails the test)."""
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
