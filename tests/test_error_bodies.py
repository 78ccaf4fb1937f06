"""What a misbehaving endpoint's bodies become in the model client: error text quoting the prompt
is masked and escaped, oversized bodies are read with a bound (real mock endpoint, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import re
import threading
import tracemalloc
from pathlib import Path

import httpx
import pytest
from error_body_support import measure

from ddscope.engine.client.answers import MAX_DETAIL_CHARS, parse_chat_completion
from ddscope.engine.client.model_client import ModelClient
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.run_setup import default_client
from ddscope.errors import BadResponse, ConfigError, ModelError, ServerError
from ddscope.mock import MockBehavior, MockServer, MockServerProcess

PROMPT = "Describe the lighthouse keeper's logbook entries in detail. PROMPT-MARK-51c0e2"
SYSTEM = "You are an archivist who answers in plain prose."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


async def _fail(base_url: str, **client_kwargs: int) -> ModelError:
    async with ModelClient(base_url, **client_kwargs) as client:  # type: ignore[arg-type]
        with pytest.raises(ModelError) as caught:
            await client.chat("mock-model", MESSAGES)
    return caught.value


def test_an_error_quoting_the_prompt_is_masked_and_escaped(srv: MockServer) -> None:
    srv.update(quote_prompt_every=1)
    error = asyncio.run(_fail(srv.base_url))
    text = str(error)
    assert isinstance(error, ServerError) and error.status_code == 500
    assert "PROMPT-MARK-51c0e2" not in text and "archivist" not in text
    # The mock quotes every message's text, newline-joined: masked as the system prompt
    # and the prompt (the newline between them became a space).
    assert f"upstream failed on: <system prompt:{len(SYSTEM)} chars> <prompt:" in text
    assert "\x1b" not in text and "\\x1b[31m" in text  # the terminal escape, made visible


def test_an_oversized_success_body_is_a_bad_response_naming_the_setting(srv: MockServer) -> None:
    error = asyncio.run(_fail(srv.base_url, max_response_bytes=100))
    assert isinstance(error, BadResponse)
    assert "larger than max_response_bytes (100 bytes)" in str(error)


def test_a_50_mb_error_message_yields_bounded_text_and_bounded_memory() -> None:
    size = 50 * 1024 * 1024
    behavior = MockBehavior(quote_prompt_every=1, error_body_bytes=size)
    with MockServerProcess(behavior) as server:  # its own process: only the client is measured
        tracemalloc.start()
        try:
            error = asyncio.run(_fail(server.base_url))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    text = str(error)
    assert len(text) <= MAX_DETAIL_CHARS
    assert "PROMPT-MARK" not in text
    stated = re.search(r"… \(cut; ([\d,]+) bytes in all\)\Z", text)  # the body's size
    assert stated is not None, text
    assert int(stated[1].replace(",", "")) > size
    assert "upstream failed on: <system prompt:" in text
    # Reading the body whole would allocate ≥ 50 MB; the bounded read peaks near 1 MB here.
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes"


def _pipeline(endpoint: str, max_response_bytes: object) -> Pipeline:
    return Pipeline.from_dict(
        {
            "providers": [
                {"name": "p", "endpoint": endpoint, "max_response_bytes": max_response_bytes}
            ],
            "models": [{"alias": "m", "provider": "p", "model": "mock-model"}],
            "columns": [{"name": "c", "type": "llm_text", "model": "m", "prompt": "hi"}],
        }
    )


def test_the_pipeline_setting_reaches_the_client(srv: MockServer) -> None:
    pipeline = _pipeline(srv.base_url, 100)
    alias = pipeline.models[0]
    client = default_client(pipeline.provider_for(alias), alias)

    async def call() -> None:
        async with client:
            await client.chat("mock-model", MESSAGES)

    with pytest.raises(BadResponse, match=r"larger than max_response_bytes \(100 bytes\)"):
        asyncio.run(call())


def test_a_bad_setting_is_one_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"providers\[0\]\.max_response_bytes"):
        _pipeline("http://127.0.0.1:1/v1", 0)


def test_a_run_against_50_mb_error_bodies_records_small_events_in_flat_memory(
    tmp_path: Path,
) -> None:
    """The run-level check (figures: benchmarks/bench_error_body.py)."""
    ordinary = measure(0, 16, tmp_path)
    huge = measure(50 * 1024 * 1024, 16, tmp_path)
    assert ordinary["exit_code"] == huge["exit_code"] == 0
    assert huge["server_errors"] >= 3  # every fourth request answered a 50 MB 500
    assert huge["largest_error_chars"] <= MAX_DETAIL_CHARS
    assert huge["largest_attempt_line_bytes"] < 1024
    # Reading one such body whole would add ≥ 100 MB; measured growth is about 2 MB.
    growth_kb = huge["peak_rss_kb"] - ordinary["peak_rss_kb"]
    assert growth_kb < 30 * 1024, f"peak RSS grew by {growth_kb:,} KiB"


class _GzipBomb(http.server.BaseHTTPRequestHandler):
    """Answers 200 with 20 MB of zeros, gzip-encoded (about 20 KB on the wire), chunked."""

    protocol_version = "HTTP/1.1"  # chunked framing
    status = 200
    content = b"0" * 20_000_000

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = gzip.compress(self.content)
        self.send_response(self.status)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 4096):
            piece = body[start : start + 4096]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        return


class _GzipQuote(_GzipBomb):
    """A 500 whose gzip-encoded JSON message quotes the prompt."""

    status = 500
    content = b'{"error": {"message": "refused: ' + PROMPT.encode() + b'"}}'


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_compressed_error_body_is_decoded_and_scrubbed(transport: str) -> None:
    error = _call_raw_server(_GzipQuote, transport)
    assert isinstance(error, ServerError)
    assert str(error) == f"HTTP 500 Internal Server Error: refused: <prompt:{len(PROMPT)} chars>"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_compressed_body_is_bounded_after_decoding(transport: str) -> None:
    error = _call_raw_server(_GzipBomb, transport)
    assert isinstance(error, BadResponse)
    assert "larger than max_response_bytes (1,000,000 bytes)" in str(error)


def _call_raw_server(handler: type[_GzipBomb], transport: str) -> ModelError:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"

        async def call() -> ModelError:
            async with ModelClient(url, transport=transport, max_response_bytes=1_000_000) as c:  # type: ignore[arg-type]
                with pytest.raises(ModelError) as caught:
                    await c.chat("m", MESSAGES)
            return caught.value

        return asyncio.run(call())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_response_model_name_is_bounded_and_escaped() -> None:
    response = httpx.Response(
        200,
        json={
            "model": "evil\x1b[2J" + "m" * 10_000,
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
        },
    )
    result = parse_chat_completion(response)
    assert result.response_model is not None
    assert "\x1b" not in result.response_model and result.response_model.startswith("evil\\x1b")
    assert len(result.response_model) <= MAX_DETAIL_CHARS
    assert parse_chat_completion(httpx.Response(200, json={**_COMPLETION})).response_model == "gpt"


_COMPLETION = {"model": "gpt", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
