"""``ddtrace export --chrome-json``: the same timeline as Chrome trace-event JSON."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from engine_records import EngineSpec, write_engine_record
from perfetto_support import peak_concurrency, record_dicts

from ddscope.cli.main import cli
from ddscope.exporters.trace.chrome_json import export_chrome_json
from ddscope.exporters.trace.perfetto import export_perfetto

SPEC = EngineSpec(rows=60, buffer_size=20, rate_limit_every=7, defer_every=11, drop_rows=(3,))


def _export(tmp_path: Path, spec: EngineSpec = SPEC) -> tuple[Path, list[dict[str, Any]]]:
    record = tmp_path / "run.jsonl"
    write_engine_record(record, spec)
    result = export_chrome_json(record, tmp_path / "run.trace.json")
    assert result.bytes_written == (tmp_path / "run.trace.json").stat().st_size
    return record, orjson.loads((tmp_path / "run.trace.json").read_bytes())["traceEvents"]


def test_slices_nest_per_thread_and_threads_are_named_first(tmp_path: Path) -> None:
    record, events = _export(tmp_path)
    named: dict[int, str] = {}
    stacks: dict[int, list[float]] = defaultdict(list)
    for event in events:
        if event["ph"] == "M" and event["name"] == "thread_name":
            named[event["tid"]] = event["args"]["name"]
        elif event["ph"] in "BEiX":
            assert event["tid"] in named, "a thread is named before its first event"
            stack = stacks[event["tid"]]
            assert not stack or event["ts"] >= stack[-1]
            if event["ph"] == "B":
                stack.append(event["ts"])
            elif event["ph"] == "E":
                stack.pop()
    assert not any(stacks.values())
    chats = [e for e in events if e["ph"] == "B" and e["name"].startswith("chat ")]
    finished = [d for d in record_dicts(record) if d["kind"] == "attempt_finished"]
    assert len(chats) == len(finished)
    attempt_lanes = {n for n in named.values() if " › attempts › chat #" in n}
    assert len(attempt_lanes) == max(
        peak_concurrency(record_dicts(record), "attempt", "domain").values()
    )


def test_flows_start_step_and_end_once(tmp_path: Path) -> None:
    _, events = _export(tmp_path)
    state: dict[int, str] = {}
    for event in events:
        if "bind_id" not in event:
            continue
        flow, into, out = event["bind_id"], event.get("flow_in"), event.get("flow_out")
        assert state.get(flow) != "ended"
        assert (flow in state) == bool(into)  # only the first event of a flow has no flow_in
        state[flow] = "live" if out else "ended"
    assert state and set(state.values()) == {"ended"}


def test_counters_carry_the_limit_changes(tmp_path: Path) -> None:
    record, events = _export(tmp_path)
    changes = [d for d in record_dicts(record) if d["kind"] == "limit_changed"]
    limit = [
        e["args"]["value"] for e in events if e["ph"] == "C" and e["name"].endswith("AIMD limit")
    ]
    assert limit == [changes[0]["old"]] + [d["new"] for d in changes]
    names = Counter(e["name"] for e in events if e["ph"] == "i")
    assert names["429"] == sum(
        1 for d in record_dicts(record) if d.get("outcome") == "rate_limited"
    )


def test_perfetto_trace_is_at_most_half_the_json(tmp_path: Path) -> None:
    record, _ = _export(tmp_path)
    perfetto = export_perfetto(record, tmp_path / "run.pftrace")
    assert perfetto.bytes_written * 2 <= (tmp_path / "run.trace.json").stat().st_size


def test_cli_writes_json_beside_the_record(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    count = write_engine_record(record, EngineSpec(rows=6, buffer_size=3))
    result = CliRunner().invoke(cli, ["export", str(record), "--chrome-json"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run.trace.json"
    assert result.output.strip() == f"{out}  ({count} events, {out.stat().st_size:,} bytes)"
    assert orjson.loads(out.read_bytes())["displayTimeUnit"] == "ns"
