"""The mock endpoint in a child process, for benchmarks: client and server then run on separate
interpreters (separate GILs, possibly separate cores), so the server's CPU does not count
against the client being measured.

It runs ``python -m ddscope.cli.main mock-server --port 0 ...`` and reads the base URL from the
command's first stdout line.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import IO, Any

import httpx

from ddscope.mock.behavior import MockBehavior, MockStats

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_API_KEY_ENV = "DDSCOPE_MOCK_API_KEY"


class MockServerProcess:
    """``with MockServerProcess(MockBehavior(latency_ms=50)) as srv: srv.base_url``."""

    def __init__(self, behavior: MockBehavior | None = None, **knobs: Any) -> None:
        behavior = behavior or MockBehavior()
        self.behavior = behavior.replace(**knobs) if knobs else behavior
        self._proc: subprocess.Popen[str] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("MockServerProcess is not running; call start() first")
        return self._base_url

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def start(self) -> MockServerProcess:
        if self._proc is not None:
            raise RuntimeError("MockServerProcess already started")
        command = [sys.executable, "-m", "ddscope.cli.main", "mock-server", "--port", "0"]
        env = dict(os.environ)
        if self.behavior.api_key is not None:
            env[_API_KEY_ENV] = self.behavior.api_key
            command += ["--api-key-env", _API_KEY_ENV]
        command += self.behavior.to_cli_args()
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = _read_line(self._proc.stdout, START_TIMEOUT_S)
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the mock server process did not start (first line: {line!r})")
        self._base_url = line.strip()
        return self

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it takes too long."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT_S)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        self._base_url = None

    def __enter__(self) -> MockServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> MockStats:
        response = httpx.get(f"{self.root_url}/stats", timeout=5.0)
        response.raise_for_status()
        return MockStats(**response.json())

    def reset_stats(self) -> MockStats:
        response = httpx.post(f"{self.root_url}/stats/reset", timeout=5.0)
        response.raise_for_status()
        return MockStats(**response.json())


def _read_line(stream: IO[str], timeout_s: float) -> str:
    """One line from a child's pipe, or "" if none arrives in time (POSIX select)."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return stream.readline() if ready else ""
