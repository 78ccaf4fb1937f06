"""The ``--otlp-endpoint``, ``--otlp-protocol`` and ``--prometheus-port`` options of ``ddtrace run``
and ``ddtrace demo``; their values go to :func:`ddscope.exporters.otel.setup.build_otel_sink`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ddscope.exporters.otel.setup import PROTOCOLS

F = TypeVar("F", bound=Callable[..., Any])


def otel_options(func: F) -> F:
    """Adds ``--otlp-endpoint``, ``--otlp-protocol`` and ``--prometheus-port`` to a command."""
    func = click.option(
        "--prometheus-port",
        type=click.IntRange(1, 65535),
        default=None,
        metavar="PORT",
        help="Serve live metrics for Prometheus at http://127.0.0.1:PORT/metrics during the run.",
    )(func)
    func = click.option(
        "--otlp-protocol",
        type=click.Choice(PROTOCOLS),
        default=None,
        help="OTLP protocol (else OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).",
    )(func)
    return click.option(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="Send spans and metrics over OTLP to URL, e.g. http://127.0.0.1:4317 "
        "(else OTEL_EXPORTER_OTLP_ENDPOINT; off when neither is set).",
    )(func)
