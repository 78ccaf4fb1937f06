"""What a run opens before its first event: request-admission settings per domain and one model
client per provider (split out of the scheduler, which is about the run's phases)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ddscope.engine.admission.gate import AdmissionSettings
from ddscope.engine.client.model_client import ModelClient
from ddscope.engine.pipeline.model import ModelAlias, Pipeline, Provider

ClientFactory = Callable[[Provider, ModelAlias], Any]


def admission_settings(pipeline: Pipeline) -> dict[str, AdmissionSettings]:
    """Request-admission settings per domain: the alias's parallelism and ramp, and the run's
    settings as they are (one source of truth: nothing is copied field by field)."""
    return {
        domain: AdmissionSettings.for_alias(alias, pipeline.run)
        for domain, alias in pipeline.domains().items()
    }


def default_client(provider: Provider, alias: ModelAlias) -> ModelClient:
    """A client for ``provider``; the API key comes from the variable the provider names."""
    timeout_s, max_bytes = alias.timeout_s, provider.max_response_bytes
    if provider.api_key_env:
        return ModelClient.from_env(
            provider.endpoint,
            api_key_env=provider.api_key_env,
            timeout_s=timeout_s,
            max_response_bytes=max_bytes,
        )
    return ModelClient(provider.endpoint, timeout_s=timeout_s, max_response_bytes=max_bytes)


async def open_clients(
    pipeline: Pipeline, factory: ClientFactory, stack: contextlib.AsyncExitStack
) -> dict[str, Any]:
    """One client per provider, shared by its aliases (the longest alias timeout applies)."""
    clients: dict[str, Any] = {}
    aliases = [pipeline.model_for(c.name) for c in pipeline.columns]
    by_provider: dict[str, ModelAlias] = {}
    for alias in aliases:
        if alias is None:
            continue
        best = by_provider.get(alias.provider)
        if best is None or alias.timeout_s > best.timeout_s:
            by_provider[alias.provider] = alias
    for name, alias in by_provider.items():
        client = factory(pipeline.provider_for(alias), alias)
        clients[name] = await stack.enter_async_context(client)
    return clients
