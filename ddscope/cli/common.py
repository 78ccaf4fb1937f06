"""What every command shares: error reporting and exit codes.

Exit codes: 0 success, 1 the run failed or a check did not pass, 2 bad usage, config or input.
Errors print one line, ``Type: message``, to stderr. Errors and warnings may quote what a server
sent (a collector's refusal, an endpoint's error), so their control characters reach the terminal
as visible escapes (``\x1b``), as everywhere else server text is printed.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ddscope.errors import ConfigError, DdscopeError, RecordError
from ddscope.safe_text import escape_controls

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: BaseException, code: int) -> None:
    click.echo(escape_controls(f"{type(exc).__name__}: {exc}"), err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turns ddscope's own errors into one stderr line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, RecordError) as exc:
            fail(exc, EXIT_USAGE)
        except DdscopeError as exc:
            fail(exc, EXIT_FAILED)
        return None

    return wrapper  # type: ignore[return-value]


def finite_seconds(value: float | None, option: str) -> float | None:
    """A click callback's check: nan and inf pass ``FloatRange`` (comparisons with nan are
    false) but are never meant as a time."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds", param_hint=option)
    return value


def warn(message: str) -> None:
    click.echo(escape_controls(f"warning: {message}"), err=True)
