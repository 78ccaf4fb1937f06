"""The ``ddtrace`` command group. Commands live one per module and load on first use, so that
``ddtrace health`` does not pay for importing OpenTelemetry, uvicorn or Perfetto."""

from __future__ import annotations

import importlib
from typing import IO, Any

import click

from ddscope import __version__
from ddscope.safe_text import escape_controls

# command name → "module:attribute"
COMMANDS: dict[str, str] = {
    "run": "ddscope.cli.run:run_command",
    "demo": "ddscope.cli.run:demo_command",
    "export": "ddscope.cli.export:export_command",
    "health": "ddscope.cli.health:health_command",
    "merge": "ddscope.cli.merge:merge_command",
    "mock-server": "ddscope.cli.mock_server:mock_server_command",
    "open": "ddscope.cli.open:open_command",
    "report": "ddscope.cli.report:report_command",
    "convert": "ddscope.cli.convert:convert_command",
}


class OneLineUsageError(click.UsageError):
    """A usage error shown as every ddscope error is: one ``Type: message`` line on stderr
    (click's own puts the usage and a help hint on lines of their own before it), exit 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        message = self.format_message().rstrip(".")
        click.echo(escape_controls(f"UsageError: {message}{hint}"), err=True)


# Click ≥ 8.2 raises this for a group run without a command: its "message" is the help text,
# which is what should be shown, as click shows it.
_HELP_AS_ERROR: tuple[type[click.UsageError], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


def _one_line(error: click.UsageError) -> click.UsageError:
    if isinstance(error, (OneLineUsageError, *_HELP_AS_ERROR)):
        return error
    return OneLineUsageError(error.format_message(), error.ctx)


class LazyGroup(click.Group):
    """Commands imported on first use; usage errors (the group's or a command's) on one line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _one_line(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a command's options, arguments or own checks
            raise _one_line(error) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ddtrace")
def cli() -> None:
    """ddscope: run LLM dataset pipelines and see inside them.

    \b
    Start here:
      ddtrace demo                      run the example pipeline on the built-in mock endpoint
      ddtrace health out/run.jsonl      what happened and why
      ddtrace report out/run.jsonl      an HTML page with plots
      ddtrace open out/run.jsonl        the trace in ui.perfetto.dev
    """


def main() -> None:
    cli(prog_name="ddtrace")


if __name__ == "__main__":  # pragma: no cover
    main()
