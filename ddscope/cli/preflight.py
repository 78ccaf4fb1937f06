"""Checks before ``ddtrace run`` touches its output directory: OTLP endpoint syntax, API-key
variables, and a TCP connection to every endpoint the pipeline uses. Each failure is one line
naming the option, the provider or the URL."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from ddscope.engine.pipeline.model import Pipeline
from ddscope.errors import ConfigError, DdscopeError

ENDPOINT_CHECK_S = 5.0  # how long the start-up check waits for a TCP connection


class EndpointUnreachable(DdscopeError):
    """A provider's endpoint refused or did not answer a connection at start (exit 1)."""


def check_otlp_endpoint(value: str | None, option: str = "--otlp-endpoint") -> None:
    """A bare word is refused before any DNS lookup: an endpoint needs a scheme or a port."""
    if value is None or not value.strip():
        return
    text = value.strip()
    if "://" not in text and ":" not in text:
        raise ConfigError(
            f"{option}: {text!r} is not a URL like http://127.0.0.1:4317 (no scheme and no port)"
        )


def check_api_keys(pipeline: Pipeline) -> None:
    """Every API-key variable a used provider names holds a key the client will send (the
    client's own check: set, not blank, no character a header cannot carry), before the out
    dir is touched."""
    from ddscope.engine.client.model_client import checked_api_key

    for alias in pipeline.domains().values():
        provider = pipeline.provider_for(alias)
        if not provider.api_key_env:
            continue
        name = f"providers: {provider.name}: api_key_env: environment variable "
        value = os.environ.get(provider.api_key_env)
        if not value:
            state = "blank" if value is not None else "not set"
            raise ConfigError(f"{name}{provider.api_key_env} is {state}")
        checked_api_key(value, f"{name}{provider.api_key_env}")


def check_endpoints(pipeline: Pipeline, timeout_s: float = ENDPOINT_CHECK_S) -> None:
    """A TCP connection to every used provider's endpoint, so a wrong URL or a server that is
    down is one line naming the URL tried, before any file is replaced."""
    seen: set[str] = set()
    for alias in pipeline.domains().values():
        provider = pipeline.provider_for(alias)
        if provider.endpoint in seen:
            continue
        seen.add(provider.endpoint)
        url = urlsplit(provider.endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
                pass
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise EndpointUnreachable(
                f"provider {provider.name!r}: cannot connect to {provider.endpoint} ({why}); "
                "is the server up and the endpoint right?"
            ) from exc
