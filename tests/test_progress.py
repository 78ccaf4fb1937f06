from __future__ import annotations

import io
from pathlib import Path

from ddscope import events as ev
from ddscope.cli.console.progress import ProgressSink, RunTally, status_line
from ddscope.cli.console.summary import exit_code_of, summary_paragraph
from ddscope.engine.scheduler import RunSummary

S = 1_000_000_000
SECRET_PROMPT = "PROMPT-TEXT-must-not-show"


def _header() -> ev.RunHeader:
    return ev.RunHeader(
        ddscope_version="0.1.0",
        run_id="r1",
        started_at_unix_ns=0,
        num_records=4,
        buffer_size=2,
        domains=[
            ev.DomainInfo(domain="mock/m", provider="mock", model="m", max_parallel_requests=4)
        ],
    )


def _events(outcome: str = "shutdown") -> list[ev.Event]:
    attempt = {"task_id": "summary:0", "domain": "mock/m", "request_id": 1}
    return [
        ev.RunStarted(t_ns=0, num_records=4, row_groups=2),
        ev.AttemptStarted(t_ns=1, attempt=1, lease_id=1, prompt=SECRET_PROMPT, **attempt),
        ev.AttemptFinished(t_ns=2, attempt=1, outcome="ok", completion=SECRET_PROMPT, **attempt),
        ev.AttemptStarted(t_ns=3, attempt=2, lease_id=1, **attempt),
        ev.AttemptFinished(t_ns=4, attempt=2, outcome="rate_limited", retry_after_s=5, **attempt),
        ev.CooldownStarted(t_ns=1 * S, cooldown_id=1, domain="mock/m", duration_s=5.0),
        ev.LimitChanged(t_ns=1 * S, domain="mock/m", old=4, new=2, reason="decrease"),
        ev.RowGroupFinished(
            t_ns=2 * S, row_group=0, outcome="checkpointed", rows_completed=2, rows_dropped=0
        ),
        ev.Health(
            t_ns=3 * S,
            queue_depth=2,
            leases=1,
            in_flight=0,
            deferred=1,
            rows_completed=2,
            rows_dropped=0,
            row_groups_in_flight=1,
        ),
        ev.BreakerChanged(
            t_ns=4 * S,
            domain="mock/m",
            state="open",
            reason="consecutive_429",
            consecutive_429=8,
            share_429=0.9,
            last_retry_after_s=5.0,
        ),
        ev.Shutdown(
            t_ns=4 * S,
            reason="endpoint_saturated",
            domain="mock/m",
            message="mock/m kept answering 429.",
        ),
        ev.RowDropped(t_ns=5 * S, row_group=1, row=2, reason="breaker_open", message="x"),
        ev.RowDropped(t_ns=5 * S, row_group=1, row=3, reason="breaker_open", message="x"),
        ev.RowGroupFinished(
            t_ns=5 * S, row_group=1, outcome="checkpointed", rows_completed=0, rows_dropped=2
        ),
        ev.RunFinished(
            t_ns=6 * S,
            outcome=outcome,
            reason="endpoint_saturated",  # type: ignore[arg-type]
            message="Stopped.",
            rows_completed=2,
            rows_dropped=2,
        ),
    ]


def _run(sink: ProgressSink, outcome: str = "shutdown") -> None:
    sink.open(_header())
    for event in _events(outcome):
        sink.handle(event)
    sink.close()


def test_plain_mode_prints_checkpoints_health_breaker_and_shutdown() -> None:
    out = io.StringIO()
    _run(ProgressSink(out, interactive=False))
    lines = out.getvalue().splitlines()
    assert any("row group 1/2 checkpointed: 2/4 rows done" in line for line in lines)
    health = next(line for line in lines if "health:" in line)
    assert "[    3.0s]" in health and "deferred 1" in health
    assert "mock/m in flight 0/2, cooldown 3.0s" in health
    assert any("BREAKER OPEN on mock/m: consecutive_429" in line for line in lines)
    assert any(
        "SHUTDOWN (endpoint_saturated): mock/m kept answering 429." in line for line in lines
    )
    drops = [line for line in lines if "dropped (breaker_open)" in line]
    assert len(drops) == 1 and "row 2 dropped" in drops[0]  # first of each reason only
    assert "\r" not in out.getvalue()
    assert SECRET_PROMPT not in out.getvalue()


def test_tally_counts_requests_drops_and_rows() -> None:
    sink = ProgressSink(io.StringIO(), interactive=False, quiet=True)
    _run(sink)
    t = sink.tally
    assert (t.requests, t.rate_limited) == (2, 1)
    assert (t.rows_completed, t.rows_dropped) == (2, 2)
    assert dict(t.drops_by_reason) == {"breaker_open": 2}
    assert t.domains["mock/m"].limit == 2


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    _run(ProgressSink(out, interactive=True, quiet=True))
    assert out.getvalue() == ""


def test_terminal_mode_redraws_one_status_line_and_ends_it() -> None:
    out = io.StringIO()
    _run(ProgressSink(out, interactive=True, refresh_s=0.0))
    text = out.getvalue()
    assert "\r\x1b[K[" in text
    assert "health:" not in text  # health updates the status line instead of printing lines
    assert "BREAKER OPEN" in text
    assert text.endswith("\n")
    assert SECRET_PROMPT not in text


def test_live_rows_are_not_counted_twice_before_the_checkpoint() -> None:
    t = RunTally()
    t.open(_header())
    t.update(
        ev.Health(
            t_ns=1,
            queue_depth=0,
            leases=0,
            in_flight=0,
            deferred=0,
            rows_completed=2,
            rows_dropped=0,
            row_groups_in_flight=1,
        )
    )
    t.update(
        ev.RowGroupFinished(
            t_ns=2, row_group=0, outcome="checkpointed", rows_completed=2, rows_dropped=0
        )
    )
    assert t.rows_completed == 2
    assert "2/4 rows" in status_line(t)


def _summary(**fields: object) -> RunSummary:
    base: dict[str, object] = {
        "run_id": "r1",
        "outcome": "shutdown",
        "reason": "endpoint_saturated",
        "message": "stopped",
        "rows_completed": 2,
        "rows_dropped": 2,
        "drops_by_reason": {"breaker_open": 2},
        "duration_s": 6.0,
        "requests": 2,
        "rate_limited": 1,
    }
    return RunSummary(**{**base, **fields})  # type: ignore[arg-type]


def test_summary_states_outcome_reason_rows_drops_files_and_next_commands() -> None:
    text = summary_paragraph(_summary(), 4, Path("out/data.jsonl"), Path("out/run.jsonl"))
    assert text.startswith("Run shut down (endpoint_saturated) after 6.0 s. Stopped.")
    assert "2/4 rows written to out/data.jsonl, 2 dropped (breaker_open 2)" in text
    assert "2 requests, 1 rate-limited (429)" in text
    assert "ddtrace health out/run.jsonl" in text
    assert "ddtrace report out/run.jsonl" in text and "ddtrace open out/run.jsonl" in text


def test_complete_run_exits_zero_and_a_stopped_one_one() -> None:
    done = _summary(outcome="complete", reason=None, message=None, rows_dropped=0)
    assert exit_code_of(done) == 0
    assert summary_paragraph(done, 4, Path("d"), Path("r")).startswith("Run complete in 6.0 s.")
    assert exit_code_of(_summary()) == 1


def test_ctrl_c_summary_names_it_without_repeating_the_outcome() -> None:
    cancelled = _summary(outcome="cancelled", reason="cancelled", message=None, duration_s=2.0)
    text = summary_paragraph(cancelled, 4, Path("d"), Path("r"))
    assert text.startswith("Run cancelled after 2.0 s. 2/4 rows written")
    assert exit_code_of(cancelled) == 1
