"""The model client's ``transport="httpx"``: one POST with plain httpx, the body read with a bound.

Kept for users who want httpx's own stack (its async pool costs several times the CPU of
aiohttp under concurrency: DESIGN §3, ``benchmarks/bench_client.py``). The URL is absolute and
built once (a relative one costs httpx a parse and a merge per request, ~45 µs). The answer is an
``httpx.Response`` holding what was read; ``extensions[BODY_CUT]`` is the full size (-1 if
unknown) when the body was larger than the bound.
"""

from __future__ import annotations

import httpx

from ddscope.engine.client.aiohttp_post import BODY_CUT, ERROR_BODY_BYTES

__all__ = ["HttpxPoster"]


class HttpxPoster:
    """POSTs JSON bodies to one URL over an ``httpx.AsyncClient``."""

    # httpx takes proxy credentials only from the proxy variables' URLs, which the client
    # redacts already (aiohttp may add .netrc's: AiohttpPoster.proxy_secrets).
    proxy_secrets: tuple[str, ...] = ()

    def __init__(
        self,
        url: httpx.URL,
        headers: dict[str, str],
        *,
        timeout_s: float,
        max_connections: int,
        max_response_bytes: int,
    ) -> None:
        self._url = url
        self._max_response_bytes = max_response_bytes
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits
        )

    async def post(self, content: bytes) -> httpx.Response:
        """One POST, its body read with the bound; raises httpx's exceptions as they come."""
        request = self._http.build_request("POST", self._url, content=content)
        streamed = await self._http.send(request, stream=True)
        try:
            limit = self._max_response_bytes
            if not streamed.is_success:
                limit = min(limit, ERROR_BODY_BYTES)
            declared = _content_length(streamed)
            total: int | None
            if streamed.is_success and declared is not None and declared > limit:
                body, total = b"", declared  # refused unread: no point reading it
            elif declared is not None and declared <= limit and _identity(streamed):
                await streamed.aread()  # the usual case: the declared size is the bound
                return streamed
            else:
                body, total = await _read_bounded(streamed, limit, declared)
        finally:
            await streamed.aclose()
        extensions = dict(streamed.extensions)
        if total is not None:
            extensions[BODY_CUT] = total
        headers = streamed.headers.copy()
        for stale in ("content-encoding", "content-length"):  # the body is decoded, maybe cut
            headers.pop(stale, None)
        return httpx.Response(
            streamed.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def _identity(response: httpx.Response) -> bool:
    """No Content-Encoding: the decoded body is as long as the declared one (no zip bomb)."""
    encoding = str(response.headers.get("content-encoding", "identity"))
    return encoding.strip().lower() == "identity"


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _read_bounded(
    response: httpx.Response, limit: int, declared: int | None
) -> tuple[bytes, int | None]:
    """At most ``limit`` bytes of the (decoded) body, and None or — if there was more — the
    full size as declared (-1 when the server did not say). The rest is never read: closing
    the response drops the connection instead."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), declared if declared is not None else -1
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), None
