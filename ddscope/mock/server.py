"""The mock OpenAI-compatible endpoint over real HTTP: a Starlette app served by uvicorn
(uvloop + httptools), and :class:`MockServer`, which runs it on a background thread.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /stats`` (counters as JSON),
``POST /stats/reset``. What each request gets is decided by
:class:`~ddscope.mock.behavior.MockState`.

::

    with MockServer(MockBehavior(latency_ms=50, rate_limit_k=9)) as srv:
        srv.base_url        # http://127.0.0.1:PORT/v1
        srv.stats().ok
        srv.update(rate_limit_k=0)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ddscope.mock.behavior import Decision, MockBehavior, MockState, MockStats
from ddscope.mock.replies import (
    ChatRequest,
    InvalidRequest,
    completion_body,
    error_body,
    models_body,
    parse_chat_request,
)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
# Outcome → (OpenAI error type, message) for the answers that are not a completion.
_ERRORS: dict[str, tuple[str, str]] = {
    "rate_limited_pattern": ("rate_limit_error", "mock: rate limit (429 pattern)"),
    "rate_limited_capacity": ("rate_limit_error", "mock: over capacity"),
    "rate_limited_outage": ("rate_limit_error", "mock: rate limited (timed outage)"),
    "rate_limited_quota": ("rate_limit_error", "mock: request quota exceeded"),
    "server_error": ("server_error", "mock: server error"),
    "client_error": ("invalid_request_error", "mock: request rejected"),
    "unauthorized": ("invalid_request_error", "mock: missing or wrong API key"),
    "hang": ("server_error", "mock: hang ended"),
}


def quoted_error_message(prompt: str) -> str:
    """What a content filter or gateway says: the input it refused, quoted (with a terminal
    escape, as some do: a client must not let it reach a terminal)."""
    return f"\x1b[31mupstream failed on: {prompt}\x1b[0m"


def padded(message: str, size: int) -> str:
    """``message`` padded with filler to ``size`` bytes (oversized error bodies)."""
    filler = size - len(message.encode())
    return message if filler <= 0 else message + " " + "z" * (filler - 1)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class MockApp:
    """The ASGI application around one :class:`MockState`."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release_hangs: asyncio.Event | None = None
        self.starlette = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/stats/reset", self.reset_stats, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._release_hangs = asyncio.Event()
        yield
        self._release_hangs.set()

    def release_hangs(self) -> None:
        """Ends every hanging request now (thread-safe). Later hangs hang again."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._release_now)

    def _release_now(self) -> None:
        if self._release_hangs is not None:
            self._release_hangs.set()
        self._release_hangs = asyncio.Event()

    async def chat_completions(self, request: Request) -> Response:
        try:
            chat = parse_chat_request(await request.body())
        except InvalidRequest as exc:
            self.state.count_invalid()
            return _json(400, error_body(str(exc), "invalid_request_error"))
        decision = self.state.arrive(chat.prompt_text, request.headers.get("authorization"))
        try:
            await self._wait(decision)
            return self._answer(decision, chat)
        finally:
            self.state.depart(decision)

    async def _wait(self, decision: Decision) -> None:
        if decision.outcome == "hang" and self._release_hangs is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release_hangs.wait(), decision.delay_s)
        elif decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)

    def _answer(self, decision: Decision, chat: ChatRequest) -> Response:
        headers = dict(decision.headers)  # a quota's x-ratelimit-* go on every answer
        if decision.outcome == "ok":
            return _json(200, completion_body(chat, decision.index), headers)
        if decision.outcome == "bad_response":
            return self._bad_response()
        if decision.outcome == "quoted_error":
            error_type, message = "server_error", quoted_error_message(chat.prompt_text)
        else:
            error_type, message = _ERRORS[decision.outcome]
        if decision.retry_after:
            headers["retry-after"] = decision.retry_after
        message = padded(message, self.state.behavior.error_body_bytes)
        return _json(decision.status, error_body(message, error_type), headers)

    def _bad_response(self) -> Response:
        if self.state.behavior.bad_response_kind == "not_json":
            return Response(b"<html>upstream proxy error</html>", 200, media_type="text/html")
        return _json(200, {"object": "chat.completion", "choices": []})

    async def models(self, _request: Request) -> Response:
        return _json(200, models_body(self.state.behavior.models))

    async def stats(self, _request: Request) -> Response:
        return _json(200, self.state.snapshot().as_dict())

    async def reset_stats(self, _request: Request) -> Response:
        self.state.reset()
        return _json(200, self.state.snapshot().as_dict())


def uvicorn_config(app: MockApp, *, log_level: str = "warning") -> uvicorn.Config:
    # timeout_graceful_shutdown bounds a shutdown that hanging requests would otherwise hold up.
    return uvicorn.Config(
        app.starlette,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it back with getsockname)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def base_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


class MockServer:
    """The mock endpoint in this process: uvicorn on a background thread with its own loop.

    ``MockServer(behavior)`` or ``MockServer(latency_ms=50, ...)`` (knobs applied on top).
    """

    def __init__(
        self,
        behavior: MockBehavior | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **knobs: Any,
    ) -> None:
        behavior = behavior or MockBehavior()
        self._state = MockState(behavior.replace(**knobs) if knobs else behavior)
        self._app = MockApp(self._state)
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (once started)."""
        if self._base_url is None:
            raise RuntimeError("MockServer is not running; call start() first")
        return self._base_url

    @property
    def root_url(self) -> str:
        """The origin, where ``/stats`` lives."""
        return self.base_url.removesuffix("/v1")

    @property
    def behavior(self) -> MockBehavior:
        return self._state.behavior

    def start(self) -> MockServer:
        if self._thread is not None:
            raise RuntimeError("MockServer already started")
        sock = bind_socket(self._host, self._port)
        self._base_url = base_url_of(sock)
        self._server = uvicorn.Server(uvicorn_config(self._app))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ddscope-mock", daemon=True
        )
        self._thread.start()
        self._wait_started()
        return self

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the mock server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stops the server within about ``STOP_TIMEOUT_S``, hanging requests or not."""
        if self._server is None or self._thread is None:
            return
        self._app.release_hangs()
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT_S)
        self._server = self._thread = None
        self._base_url = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> MockStats:
        return self._state.snapshot()

    def update(self, **knobs: Any) -> MockBehavior:
        """Changes knobs at run time (counters carry on)."""
        return self._state.update(**knobs)

    def reset(self, behavior: MockBehavior | None = None) -> None:
        """Zeroes counters and arrival index, optionally swaps the behaviour, ends hangs."""
        self._app.release_hangs()
        self._state.reset(behavior)

    def __repr__(self) -> str:
        return f"MockServer(base_url={self._base_url!r}, behavior={self.behavior!r})"
