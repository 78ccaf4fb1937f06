"""The "Next:" lines a command ends with: the commands to run on what it wrote, spelled the way
the user started ``ddtrace`` — after the README's set-up that is ``.venv/bin/ddtrace``, and a
bare ``ddtrace`` would not be on PATH."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def invoked_as() -> str:
    """``sys.argv[0]`` when it is the ``ddtrace`` script (quoted for a shell), ``python -m
    ddscope.cli.main`` when started that way, else ``ddtrace``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name in ("ddtrace", "ddtrace.exe"):
        return shlex.quote(argv0)
    if argv0.endswith(("ddscope/cli/main.py", "ddscope/__main__.py")):
        return f"{shlex.quote(sys.executable)} -m ddscope.cli.main"
    return "ddtrace"


def next_commands(record: Path) -> str:
    """``Next:`` and one line per command worth running on ``record``."""
    command, quoted = invoked_as(), shlex.quote(str(record))
    return (
        f"Next:\n  {command} health {quoted}\n"
        f"  {command} report {quoted}   (an HTML page with plots)\n"
        f"  {command} open {quoted}     (the trace in https://ui.perfetto.dev)\n"
        f"  {command} export {quoted} --perfetto   (the .pftrace file itself)"
    )
