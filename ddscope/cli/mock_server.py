"""``ddtrace mock-server``: serve the mock OpenAI-compatible endpoint until interrupted.

The first stdout line is the base URL (``http://127.0.0.1:PORT/v1``) so scripts can read it;
``--port 0`` picks a free port. The behaviour options are built from the fields of
:class:`~ddscope.mock.behavior.MockBehavior`, one option per knob, so the two never drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Callable
from typing import Any

import click

from ddscope.cli.common import handle_errors
from ddscope.errors import ConfigError
from ddscope.mock.behavior import MockBehavior

_SCALARS: dict[type, click.ParamType[Any]] = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # nan and inf parse as floats; as a latency or a time they would hang requests forever
    # (inf), or be refused with a misleading "must be >= 0" (nan).
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def _option_for(knob: dataclasses.Field[Any], hint: Any) -> Callable[[Any], Any]:
    """A click option mirroring one MockBehavior field (``X | None`` defaults to None)."""
    args = typing.get_args(hint)
    multiple = typing.get_origin(hint) is tuple
    if typing.get_origin(hint) is typing.Literal:
        param_type: click.ParamType[Any] = click.Choice(args)
    elif multiple:
        param_type = _SCALARS[args[0]]
    elif isinstance(hint, types.UnionType):
        param_type = _SCALARS[next(a for a in args if a is not type(None))]
    else:
        param_type = _SCALARS[hint]
    return click.option(
        "--" + knob.name.replace("_", "-"),
        knob.name,
        type=param_type,
        multiple=multiple,
        default=knob.default,
        show_default=knob.default is not None,
        callback=_finite if param_type is click.FLOAT else None,
        help=knob.metadata["help"],
    )


def _behavior_options(command: Callable[..., Any]) -> Callable[..., Any]:
    hints = typing.get_type_hints(MockBehavior)
    for knob in reversed(dataclasses.fields(MockBehavior)):
        if knob.name != "api_key":  # a secret never goes on a command line
            command = _option_for(knob, hints[knob.name])(command)
    return command


def behavior_from_options(knobs: dict[str, Any], api_key_env: str | None) -> MockBehavior:
    start, end = knobs.get("outage_from_s"), knobs.get("outage_until_s")
    if start is not None and end is not None and end <= start:
        # MockBehavior refuses it too, but by its field names; here the options are named
        raise click.BadParameter(
            f"{end:g} is not after --outage-from-s {start:g}: the outage would never happen",
            click.get_current_context(silent=True),
            param_hint="--outage-until-s",
        )
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env: environment variable {api_key_env} is not set")
    return MockBehavior(**{**knobs, "models": tuple(knobs["models"])}, api_key=api_key)


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="port (0 picks a free one)",
)
@click.option(
    "--api-key-env", default=None, help="require the API key held in this environment variable"
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
    default="warning",
    show_default=True,
    help="uvicorn log level",
)
@_behavior_options
@handle_errors
def mock_server_command(
    host: str, port: int, api_key_env: str | None, log_level: str, **knobs: Any
) -> None:
    """Serve the mock OpenAI-compatible endpoint (429 patterns, latency, errors, hangs).

    Prints the base URL on the first line, then serves until Ctrl-C / SIGTERM.
    """
    import uvicorn  # deferred: the command group must stay cheap to import

    from ddscope.mock.behavior import MockState
    from ddscope.mock.server import MockApp, base_url_of, bind_socket, uvicorn_config

    behavior = behavior_from_options(knobs, api_key_env)
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"--host/--port: cannot bind {host}:{port}: {exc.strerror}") from exc
    click.echo(base_url_of(sock))
    click.echo(f"mock behavior: {' '.join(behavior.to_cli_args()) or 'healthy'}", err=True)
    server = uvicorn.Server(uvicorn_config(MockApp(MockState(behavior)), log_level=log_level))
    logging.getLogger("uvicorn.error").addFilter(_quiet_cancelled_requests)
    server.run(sockets=[sock])


def _quiet_cancelled_requests(record: logging.LogRecord) -> bool:
    """Drops uvicorn's traceback of a request it cancelled at shutdown (one still waiting out
    its latency or hang): stopping the server with requests pending is normal, and uvicorn has
    already said so on one line ("Cancel N running task(s), timeout graceful shutdown ...")."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)
