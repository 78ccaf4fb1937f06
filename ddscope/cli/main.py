"""The ``ddtrace`` command group. Commands live one per module and load on first use, so that
``ddtrace health`` does not pay for importing OpenTelemetry, uvicorn or Perfetto."""

from __future__ import annotations

import importlib

import click

from ddscope import __version__

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


class LazyGroup(click.Group):
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
