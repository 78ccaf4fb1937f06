"""The command group: version, help, and every registered command loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ddscope import __version__
from ddscope.cli.main import COMMANDS, cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ddtrace, version {__version__}"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"  {name}" in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["--bogus"], "No such option '--bogus'"),
        (["health"], "Missing argument 'RECORD'"),
        (["health", "run.jsonl", "--at", "nan"], "--at: nan is not a finite number"),
        (["mock-server", "--port", "99999"], "'--port': 99999 is not in the range"),
        (["export", "run.jsonl", "--perfetto", "--chrome-json"], "choose one of"),
        (["report", "a", "b", "c"], "give one record, or two"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_option_and_exit_2(
    args: list[str], needle: str
) -> None:
    """As every ddscope error: one ``Type: message`` line, not click's usage block."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("UsageError: ") and needle in line, line


def test_a_usage_error_escapes_what_the_user_typed() -> None:
    result = CliRunner().invoke(cli, ["\x1b[2Jfrob"])
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\\x1b[2Jfrob" in result.stderr


def test_the_group_alone_shows_its_help() -> None:
    result = CliRunner().invoke(cli, [])
    assert "Commands:" in result.output and "UsageError" not in result.output
