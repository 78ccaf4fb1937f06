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
from pathlib import Path
from typing import Any, TypeVar

import click

from ddscope.errors import BAD_VALUE_ERRORS, ConfigError, DdscopeError, RecordError
from ddscope.safe_text import escape_controls

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# A record's times are int nanoseconds since the run started, and its readers and exporters (the
# health pass, Perfetto, OTLP) hold them in 64 bits: no moment of a run lies beyond ~292 years.
MAX_RECORD_S = (2**63 - 1) // 10**9
# A count the record carries (the header's num_records, buffer_size): orjson reads back integers
# up to 2**64 - 1 and the exporters write signed 64-bit values, so int64 is what round-trips.
MAX_COUNT = 2**63 - 1

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: BaseException, code: int) -> None:
    click.echo(escape_controls(f"{type(exc).__name__}: {exc}"), err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turns ddscope's own errors into one stderr line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return func(*args, **kwargs)
            except BAD_VALUE_ERRORS:
                # Perhaps a record's field of the wrong type: RecordError at its line if so.
                from ddscope.cli.bad_values import check_record_values, record_arguments

                check_record_values(record_arguments(kwargs))
                raise  # every event valid: ddscope's own bug, shown as such
        except (ConfigError, RecordError) as exc:
            fail(exc, EXIT_USAGE)
        except DdscopeError as exc:
            fail(exc, EXIT_FAILED)
        return None

    return wrapper  # type: ignore[return-value]


def finite_seconds(
    value: float | None, option: str, max_s: float | None = None, why: str = ""
) -> float | None:
    """A click callback's check: nan and inf pass ``FloatRange`` (comparisons with nan are
    false) but are never meant as a time; ``max_s`` bounds what later code turns into an int
    (nanoseconds) or hands to ``time.sleep``, both of which overflow on huge floats."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds", param_hint=option)
    if value is not None and max_s is not None and value > max_s:
        raise click.BadParameter(f"{value:g} s is more than {max_s:.0f} s{why}", param_hint=option)
    return value


def seconds_callback(
    option: str, max_s: float | None = None, why: str = ""
) -> Callable[[click.Context, click.Parameter, float | None], float | None]:
    """``finite_seconds`` as an option's ``callback=``; ``why`` follows the bound in the
    message, e.g. ``" (a day)"``."""
    return lambda _ctx, _param, value: finite_seconds(value, option, max_s, why)


class NonEmptyPath(click.Path):
    """``click.Path`` (as a ``Path``) that refuses ``''``: an empty argument is ``Path('.')``,
    which silently meant the current directory (``run -o ''``) or failed deep inside with a
    traceback (``health ''``). ``dir_okay=False`` then names a directory given for a file."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | bytes) and not value:
            kind = "directory" if not self.file_okay else "file"
            self.fail(f"empty path; give a {kind} name", param, ctx)
        return super().convert(value, param, ctx)


def warn(message: str) -> None:
    click.echo(escape_controls(f"warning: {message}"), err=True)
