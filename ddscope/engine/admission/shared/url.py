"""The ``--admission`` URL: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, checked and redacted.

A password in the URL is a secret like an API key: it goes to redis-py and nowhere else. Every
message, record field, span attribute and log line uses :meth:`AdmissionUrl.redacted` (the URL
without its user part), and :meth:`AdmissionUrl.scrub` removes the password from text that came
from elsewhere (an exception message), in case a library ever echoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ddscope.errors import ConfigError

SCHEMES = ("redis", "rediss")
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class AdmissionUrl:
    """A parsed ``--admission`` URL. ``raw`` (with the password) is only for the client."""

    raw: str = field(repr=False)
    scheme: str
    host: str
    port: int
    db: int
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str, *, option: str = "--admission") -> AdmissionUrl:
        """Parses ``text``; a bad URL is a ConfigError naming the option (never the password)."""
        try:
            parts = urlsplit(text)
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"{option}: not a redis:// URL (bad port?)") from None
        shown = _redact(parts.scheme, parts.hostname, parts.port, parts.path)
        if parts.scheme not in SCHEMES:
            raise ConfigError(f"{option}: expected redis://HOST:PORT/DB, got {shown}")
        if not parts.hostname:
            raise ConfigError(f"{option}: no host in {shown}")
        db_text = parts.path.strip("/") or "0"
        if not db_text.isdigit():
            raise ConfigError(f"{option}: the database must be a number, got {shown}")
        password = unquote(parts.password) if parts.password else None
        url = cls(text, parts.scheme, parts.hostname, port, int(db_text), password)
        from redis.connection import parse_url  # only a run with --admission pays for redis

        try:  # the query's options (socket_timeout=…) are redis-py's to read: ask it first
            parse_url(text)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        except ValueError as exc:
            raise ConfigError(f"{option}: {url.scrub(str(exc)).rstrip('.')}") from None
        return url

    def redacted(self) -> str:
        """The URL without user or password: safe to print, record and put on a span."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}"

    def scrub(self, text: str) -> str:
        """``text`` with the password (and the raw URL) replaced, for foreign messages."""
        text = text.replace(self.raw, self.redacted())
        if self.password:
            text = text.replace(self.password, "***")
        return text


def _redact(scheme: str, host: str | None, port: int | None, path: str) -> str:
    where = f"{host or ''}{f':{port}' if port else ''}"
    return f"{scheme or '?'}://{where}{path}"
