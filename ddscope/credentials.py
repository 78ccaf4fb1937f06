"""The forms a credential can take in text a server sends back, for redaction.

A server that refuses credentials often quotes them, and rarely as they were configured: a URL's
``user:password`` travels as ``Authorization: Basic base64(user:password)`` and comes back in
that form; a header value ``Bearer TOKEN`` comes back as ``invalid token TOKEN``; percent-encoded
userinfo comes back decoded. Each function returns every such form, so that replacing them all
leaves none of the secret behind. Shared by the model client's scrub and the OTLP warnings (the
engine and the exporters may not import each other)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlparse, urlsplit

# The proxy variables the HTTP clients (aiohttp, httpx) and gRPC honour, in either case.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "GRPC_PROXY")
MIN_TOKEN_CHARS = 6  # a shorter part of a header value is a word, not a secret


def url_credentials(url: str | None) -> set[str]:
    """The userinfo of ``url`` as given and decoded, its password alone, and the ``Basic``
    (base64) form of ``user:password``; empty if it has none."""
    netloc = urlparse(url or "").netloc
    if "@" not in netloc:
        return set()
    userinfo = netloc.rpartition("@")[0]
    found = {userinfo, unquote(userinfo)}
    _user, sep, password = unquote(userinfo).partition(":")
    if sep and password:
        found.add(password)
    found.update(basic_forms(unquote(userinfo)))
    return found


def header_value_credentials(value: str) -> set[str]:
    """A header value as given and decoded, and its token after a scheme word (``Bearer X``,
    ``Basic X`` and what ``X`` decodes to), each part of at least ``MIN_TOKEN_CHARS``."""
    value = value.strip()
    found = {value, unquote(value)}
    scheme, _, token = unquote(value).partition(" ")
    token = token.strip()
    if len(token) >= MIN_TOKEN_CHARS:
        found.add(token)
        if scheme.lower() == "basic":
            found.update(_decoded_basic(token))
    return {item for item in found if item}


def proxy_credentials(env: Mapping[str, str]) -> set[str]:
    """The credentials in the proxy variables (either case): each password with
    ``user:password`` and its ``Basic`` form — percent-encoded as in the URL and decoded as
    sent — or, for a URL with only a user name (a token), that name."""
    found: set[str] = set()
    for name in PROXY_VARIABLES:
        for variable in (name, name.lower()):
            url = env.get(variable, "").strip()
            if "@" not in url:
                continue
            try:
                parts = urlsplit(url if "://" in url else f"http://{url}")
                user, password = parts.username or "", parts.password or ""
            except ValueError:  # not a URL a client could use; its text is what is known
                userinfo = url.rpartition("@")[0].rpartition("//")[2]
                user, _, password = userinfo.partition(":")
            for user_form, password_form in {(user, password), (unquote(user), unquote(password))}:
                if password_form:
                    pair = f"{user_form}:{password_form}"
                    found.update({password_form, pair, *basic_forms(pair)})
                elif user_form:  # sent as Basic "user:" with an empty password
                    found.update({user_form, f"{user_form}:", *basic_forms(f"{user_form}:")})
    return found


def basic_forms(user_password: str) -> set[str]:
    """``user:password`` as HTTP Basic credentials, in base64 padded and not: of its UTF-8
    bytes (as httpx and the OTLP exporters encode it) and of its Latin-1 bytes (as aiohttp
    does, when the text has no other characters)."""
    found: set[str] = set()
    for encoding in ("utf-8", "latin-1"):
        with contextlib.suppress(UnicodeEncodeError):
            encoded = base64.b64encode(user_password.encode(encoding)).decode("ascii")
            found.update({encoded, encoded.rstrip("=")})
    return found


def longest_first(credentials: Iterable[str]) -> list[str]:
    """Non-empty credentials, longest first: a credential that contains another is replaced
    whole before the shorter one could cut it in two."""
    return sorted({c for c in credentials if c}, key=len, reverse=True)


def _decoded_basic(token: str) -> set[str]:
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return set()
    _, sep, password = decoded.partition(":")
    return {decoded, password} if sep and password else {decoded}
