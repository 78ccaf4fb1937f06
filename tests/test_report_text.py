"""The papercuts a new user met in the text output (issue 15): the healthy demo's health text
states no false cause, peaks come from the events when health events are few, timeline labels
are unique, nouns agree with their numbers, long record text is cut with its length stated; the
progress line fits the terminal; the "Next:" lines name the command as it was invoked."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_records import EngineSpec, engine_events
from perfetto_support import write_record
from report_support import demo_record

from ddscope import events as ev
from ddscope.cli.console.next_steps import next_commands
from ddscope.cli.console.progress import DomainView, RunTally, status_line
from ddscope.exporters.health import analyze, render
from ddscope.exporters.health.render import clip


def dicts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def healthy() -> Path:
    return demo_record("healthy")


def test_healthy_demo_states_no_false_cause(healthy: Path) -> None:
    report = analyze(healthy)
    assert report.verdict == "healthy"
    text = render(report)
    assert "answered slowly or not at all" not in text
    line = next(x for x in text.splitlines() if "longest without a completed task" in x)
    assert line.endswith("no stall")
    gap = report.scheduler.longest_no_progress
    assert gap is not None and gap.duration_s <= max(d.attempt_ok.max or 0 for d in report.domains)


def test_peaks_come_from_the_events_when_health_events_are_few(healthy: Path) -> None:
    items = dicts(healthy)
    open_leases = peak_leases = open_groups = peak_groups = 0
    for e in items:
        open_leases += (e["kind"] == "lease_started") - (e["kind"] == "lease_finished")
        open_groups += (e["kind"] == "row_group_started") - (e["kind"] == "row_group_finished")
        peak_leases, peak_groups = max(peak_leases, open_leases), max(peak_groups, open_groups)
    report = analyze(healthy)
    assert report.scheduler.health_events == sum(1 for e in items if e["kind"] == "health") == 1
    assert report.scheduler.peak_leases == peak_leases > 0
    assert report.scheduler.peak_row_groups_in_flight == peak_groups > 0
    text = render(report)
    assert f"peak leases {peak_leases}," in text
    assert "ready queue not sampled (1 health event)" in text and "1 health events" not in text


def test_limit_timeline_labels_are_unique(tmp_path: Path) -> None:
    for path in (demo_record("healthy"), demo_record("rate-limited")):
        text = render(analyze(path))
        line = next(x for x in text.splitlines() if "limit over time:" in x)
        labels = re.findall(r"([\d.]+)–[\d.]+ s:", line)
        assert labels and len(labels) == len(set(labels)), line


def test_nouns_agree_with_their_numbers(healthy: Path) -> None:
    text = render(analyze(healthy))
    assert not re.search(r"\b1 (requests|attempts|health events|tasks|rows|cooldowns)\b", text)


def test_long_record_text_is_cut_with_its_length_and_escaped(tmp_path: Path) -> None:
    spec = EngineSpec(rows=4, buffer_size=4, drop_rows=(1,))
    huge = "\x1b[2J" + "E" * 2_000_000  # a server's 2 MB error body, with a terminal escape
    items = []
    header, events = engine_events(spec)
    for event in events:
        if isinstance(event, (ev.RowDropped, ev.RunFinished)):
            event = event.model_copy(update={"message": huge})
        items.append(event)
    path = write_record(tmp_path / "run.jsonl", header, items)
    text = render(analyze(path))
    assert len(text) < 20_000
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert "[cut: 2,000,004 characters]" in text


HOSTILE = "\x1b[2J\x1b]0;owned\x07\u202e"


@pytest.mark.parametrize("color", [False, True])
def test_every_record_text_in_the_health_text_is_escaped_and_colour_still_works(
    tmp_path: Path, color: bool
) -> None:
    """Not only messages: a run id, a pipeline name, a reason — anything from the record — reach
    the text escaped; the verdict's colour is the only terminal code left."""
    spec = EngineSpec(rows=4, buffer_size=4, drop_rows=(1,))
    header, events = engine_events(spec)
    header = header.model_copy(
        update={"run_id": f"run{HOSTILE}", "pipeline_name": f"pipe{HOSTILE}"}
    )
    items = [
        e.model_copy(update={"reason": f"client_error{HOSTILE}"})
        if isinstance(e, ev.RowDropped)
        else e
        for e in events
    ]
    text = render(analyze(write_record(tmp_path / "run.jsonl", header, items)), color=color)
    assert "\x07" not in text and "\u202e" not in text and "\x1b[2J" not in text
    assert text.count("\\x1b[2J") >= 3  # run id, pipeline name, the drop's reason
    assert ("\x1b[" in text) is color  # the verdict's SGR colour, and nothing else
    assert re.findall(r"\x1b\[[0-9;]*m", text) == re.findall(r"\x1b\[[^m]*m", text)


def test_c1_controls_and_direction_overrides_in_record_text_are_escaped_too() -> None:
    """A C1 CSI (``\x9b``, ESC [ in one byte) drives many terminals; a bidi override reorders
    what follows it. The health text escapes them as the engine's scrub does."""
    shown = clip("a\x9b2Jb\u202ec\u2066d\x7f")
    assert shown == "a\\x9b2Jb\\u202ec\\u2066d\\x7f"


def _tally(domains: int, name: str = "provider-{i}/some-long-model-name-{i}") -> RunTally:
    t = RunTally(total_rows=128, now_ns=75_300_000_000, requests=2132, rate_limited=517)
    t.rows_checkpointed, t.drops_by_reason["admission_timeout"] = 47, 3
    for i in range(domains):
        t.domains[name.format(i=i)] = DomainView(
            limit=4, in_flight=3, waiters=12, breaker="open" if i == 0 else "closed"
        )
    return t


@pytest.mark.parametrize("domains", [1, 3])
@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_status_line_fits_the_terminal(domains: int, width: int) -> None:
    line = status_line(_tally(domains), width)
    assert len(line) <= width
    assert line.startswith("75.3s ") and "47/128 rows" in line  # never the clock or the rows


def test_status_line_gives_up_detail_not_words() -> None:
    line = status_line(_tally(1, "mock/mock-model"), 80)  # the 80-column terminal
    assert "…" not in line and "3/4 12w" in line  # shortened, not cut mid-word
    many = status_line(_tally(3), 100)
    assert re.search(r"\+\d more$", many)
    assert len(status_line(_tally(1), 1000)) > 100  # a wide terminal gets the full line


@pytest.mark.parametrize(
    ("argv0", "command"),
    [
        (".venv/bin/ddtrace", ".venv/bin/ddtrace"),
        ("/opt/my tools/ddtrace", "'/opt/my tools/ddtrace'"),
        ("/x/site-packages/ddscope/cli/main.py", f"{sys.executable} -m ddscope.cli.main"),
        ("/usr/bin/pytest", "ddtrace"),
    ],
)
def test_next_lines_name_the_command_as_invoked(
    argv0: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "demo"])
    text = next_commands(Path("out/run.jsonl"))
    next_lines = text.split("Next:\n", 1)[1].splitlines()
    assert [x.split(" out/run.jsonl")[0].strip() for x in next_lines] == [
        f"{command} health",
        f"{command} report",
        f"{command} open",
        f"{command} export",
    ]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--perfetto", "--chrome-json"], "--perfetto and --chrome-json"),
        (["--chrome-json", "--perfetto"], "--perfetto and --chrome-json"),
        (["--chrome-json", "--otlp", "http://127.0.0.1:9"], "--chrome-json and --otlp"),
    ],
)
def test_conflicting_export_flags_are_an_error(
    flags: list[str], named: str, healthy: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from ddscope.cli.main import cli

    out = tmp_path / "trace.out"
    result = CliRunner().invoke(cli, ["export", str(healthy), *flags, "-o", str(out)])
    assert result.exit_code == 2 and named in result.output
    assert not out.exists()  # nothing written, rather than silently one of the two
