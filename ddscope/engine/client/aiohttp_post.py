"""The model client's default transport: one POST to one prebuilt URL with aiohttp, the body
read with a bound, and nothing per request that a chat completion does not need.

httpx in front of aiohttp (``httpx-aiohttp``) cost ~200 µs of CPU per request over aiohttp
alone: a relative URL re-parsed and merged, cookies extracted from every answer, the response
wrapped twice (issue 17, ``benchmarks/bench_s5_overhead.py``). Here the URL, headers, proxy and
TLS context are settled once; the cookie jar is a dummy (an API client keeps no cookies); the
overall deadline is the caller's ``asyncio.timeout`` (a phase cannot outlast it, so aiohttp's own
per-phase timers would only add work). An answer that is not a 2xx chat completion is turned
into an ``httpx.Response`` (:meth:`RawAnswer.as_httpx`) so that one classifier judges both
transports.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ddscope.engine.client.scrub import secret_forms

__all__ = ["BODY_CUT", "ERROR_BODY_BYTES", "AiohttpPoster", "RawAnswer"]

ERROR_BODY_BYTES = 64 * 1024  # of an error body: enough for any real message, bounded
BODY_CUT = "ddscope.body_cut"  # response extension: the body was cut; its full size or -1
_DROPPED = (b"content-encoding", b"content-length")  # the body is already decoded (maybe cut)


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """What came back: status, raw header pairs, the (decoded, bounded) body and — when the body
    was larger than the bound — its full size as declared (-1 if the server did not say)."""

    status: int
    reason: str | None
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    cut_total: int | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def as_httpx(self) -> httpx.Response:
        """The answer as an httpx response (for the classifier; not on the success path)."""
        headers = [(k, v) for k, v in self.raw_headers if k.lower() not in _DROPPED]
        extensions: dict[str, object] = {}
        if self.reason:
            extensions["reason_phrase"] = self.reason.encode("latin-1", "replace")
        if self.cut_total is not None:
            extensions[BODY_CUT] = self.cut_total
        return httpx.Response(
            self.status, headers=headers, content=self.body, extensions=extensions
        )


class AiohttpPoster:
    """POSTs JSON bodies to one URL over a pooled aiohttp session (opened on first use: a
    session belongs to the event loop that runs it)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        max_connections: int,
        max_response_bytes: int,
    ) -> None:
        self._url = URL(url, encoded=True)  # parsed once: checked by the caller
        self._headers = headers
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self._proxy_headers: dict[str, str] | None = None  # for a CONNECT tunnel (https)
        self.proxy_secrets: tuple[str, ...] = ()  # the proxy credentials sent, once resolved

    def _open(self) -> aiohttp.ClientSession:
        # As httpx did: certifi's CA bundle and the environment's proxy (resolved once here, not
        # per request as aiohttp's trust_env would).
        # (certifi's bundle takes ~15 ms to load: only when the URL is https)
        tls = httpx.create_ssl_context() if self._url.scheme == "https" else True
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=5.0, ssl=tls
        )
        try:
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self._url)
        except LookupError:
            self._proxy, self._proxy_auth = None, None
        headers = self._headers
        if self._proxy_auth is not None:
            # They may come from .netrc, out of the client's sight: a proxy that refuses them
            # may quote them back, so the client redacts them too.
            login, password = self._proxy_auth.login, self._proxy_auth.password
            # (A login without a password is the credential itself: a token.)
            self.proxy_secrets = secret_forms(password or login, f"{login}:{password}")
            # aiohttp's proxy_auth= is deprecated (gone in aiohttp 4), and its replacement,
            # proxy_headers=, reaches only a CONNECT tunnel (an https endpoint): a plain-http
            # request through the proxy carries the header itself, as aiohttp did.
            credentials = {"Proxy-Authorization": self._proxy_auth.encode()}
            if self._url.scheme == "https":
                self._proxy_headers = credentials
            else:
                headers = {**headers, **credentials}
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def post(self, content: bytes) -> RawAnswer:
        """One POST; raises aiohttp's (or the OS's) exceptions as they come."""
        session = self._session or self._open()
        async with session.post(
            self._url,
            data=content,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        ) as response:
            return await self._read(response)

    async def _read(self, response: aiohttp.ClientResponse) -> RawAnswer:
        status = response.status
        success = 200 <= status < 300
        limit = (
            self._max_response_bytes if success else min(self._max_response_bytes, ERROR_BODY_BYTES)
        )
        declared = response.content_length  # of the encoded body, if encoded
        encoded = "Content-Encoding" in response.headers
        body: bytes
        total: int | None = None
        if success and declared is not None and declared > limit:
            body, total = b"", declared  # refused unread: no point reading it
        elif declared is not None and declared <= limit and not encoded:
            body = await response.read()  # the usual case: the declared size is the bound
        else:
            body, total = await _read_bounded(response.content, limit, declared)
        if total is not None:
            response.close()  # the rest is never read: the connection is dropped instead
        return RawAnswer(status, response.reason, tuple(response.raw_headers), body, total)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_bounded(
    stream: aiohttp.StreamReader, limit: int, declared: int | None
) -> tuple[bytes, int | None]:
    """At most ``limit`` bytes of the decoded body, and None or — if there was more — the full
    size as declared (-1 when the server did not say). aiohttp decompresses in bounded steps,
    so a compressed bomb is never inflated past the bound."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks), None
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], declared if declared is not None else -1
