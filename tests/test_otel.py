"""OtelSink with the SDK's in-memory exporter and metric reader: the span tree, the GenAI
attributes, cooldown links, span events, unfinished intervals, metrics, and live == replay for a
record made by the engine on a fake clock and for a real run against the mock endpoint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from engine_records import engine_events
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode, set_span_in_context
from otel_support import (
    ENGINE_SPEC,
    InMemoryOtel,
    points,
    replay,
    run_reference,
    span_path,
    span_view,
)

from ddscope.events import (
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    CooldownStarted,
    EventBus,
    LeaseFinished,
    LeaseStarted,
    RunFinished,
    RunStarted,
    Shutdown,
    WaitFinished,
    WaitStarted,
)
from ddscope.exporters.otel.direct import DirectSpans
from ddscope.exporters.otel.genai import DURATION_BUCKETS, TOKEN_BUCKETS, Conventions
from ddscope.exporters.otel.metrics import ATTEMPT_OUTCOMES, DROP_REASONS, Tally
from ddscope.record.jsonl import JsonlRecorder

HEADER, _EVENTS = engine_events(ENGINE_SPEC)
EVENTS = list(_EVENTS)
ORIGIN = HEADER.started_at_unix_ns


@pytest.fixture(scope="module")
def engine_made() -> InMemoryOtel:
    return InMemoryOtel().feed(HEADER, EVENTS)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[InMemoryOtel, list, Path]:
    record = tmp_path_factory.mktemp("real") / "run.jsonl"
    live, events = run_reference(record)
    return live, events.events, record


def _by_name(spans: list, prefix: str) -> list:
    return [s for s in spans if s.name.startswith(prefix)]


def _attempt_span(spans: list, request_id: int, attempt: int):
    (span,) = [
        s
        for s in _by_name(spans, "chat ")
        if s.attributes["ddscope.request_id"] == request_id
        and s.attributes["ddscope.attempt"] == attempt
    ]
    return span


def test_one_trace_per_run_with_the_documented_tree(engine_made: InMemoryOtel) -> None:
    spans = engine_made.spans()
    by_id = {s.context.span_id: s for s in spans}
    assert len({s.context.trace_id for s in spans}) == 1
    assert [s.name for s in spans if s.parent is None] == ["run"]
    paths = Counter(span_path(s, by_id) for s in spans)
    kinds = Counter(e.kind for e in EVENTS)
    assert paths["run > domain mock/mock-model > cooldown"] == kinds["cooldown_started"]
    assert (
        sum(n for p, n in paths.items() if p.endswith(" > chat mock-model"))
        == kinds["attempt_started"]
    )
    assert (
        sum(n for p, n in paths.items() if p.endswith(" > request.wait")) == kinds["wait_started"]
    )
    group_of = {e.lease_id: e.row_group for e in EVENTS if e.kind == "lease_started"}
    for span in _by_name(spans, "task "):
        parent = by_id[span.parent.span_id].name
        salvage = span.attributes.get("ddscope.salvage_round")
        group = group_of[span.attributes["ddscope.lease_id"]]
        assert parent == (f"salvage_round {salvage}" if salvage else f"row_group {group}")
    assert any(s.attributes.get("ddscope.salvage_round") == 1 for s in _by_name(spans, "task "))
    for span in _by_name(spans, "chat ") + _by_name(spans, "request.wait"):
        assert by_id[span.parent.span_id].name.startswith("task ")


def test_spans_carry_the_events_own_timestamps(engine_made: InMemoryOtel) -> None:
    spans = engine_made.spans()
    starts = {(e.request_id, e.attempt): e.t_ns for e in EVENTS if e.kind == "attempt_started"}
    ends = {(e.request_id, e.attempt): e.t_ns for e in EVENTS if e.kind == "attempt_finished"}
    for key, t_start in starts.items():
        span = _attempt_span(spans, *key)
        assert (span.start_time, span.end_time) == (ORIGIN + t_start, ORIGIN + ends[key])
    (run,) = _by_name(spans, "run")
    assert run.start_time == ORIGIN and run.end_time == ORIGIN + EVENTS[-1].t_ns


def test_attempt_spans_follow_the_genai_conventions(engine_made: InMemoryOtel) -> None:
    spans = engine_made.spans()
    finished = {(e.request_id, e.attempt): e for e in EVENTS if e.kind == "attempt_finished"}
    ok = next(e for e in finished.values() if e.outcome == "ok")
    span = _attempt_span(spans, ok.request_id, ok.attempt)
    assert span.kind is SpanKind.CLIENT and span.name == "chat mock-model"
    assert span.status.status_code is StatusCode.UNSET
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "mock-model",
        "gen_ai.response.model": "mock-model",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "http.response.status_code": 200,
        "ddscope.request_id": ok.request_id,
    }
    assert expected.items() <= dict(span.attributes).items()
    lease = next(s for s in spans if s.context.span_id == span.parent.span_id)
    assert lease.attributes["ddscope.task_id"] == ok.task_id
    limited = next(e for e in finished.values() if e.outcome == "rate_limited")
    span = _attempt_span(spans, limited.request_id, limited.attempt)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "rate_limited"
    assert span.attributes["http.response.status_code"] == 429
    retry = _attempt_span(spans, limited.request_id, limited.attempt + 1)
    assert retry.attributes["http.request.resend_count"] == limited.attempt
    firsts = [s for s in _by_name(spans, "chat ") if s.attributes["ddscope.attempt"] == 1]
    assert all("http.request.resend_count" not in s.attributes for s in firsts)


def test_cooldowns_link_to_the_attempt_that_caused_them(engine_made: InMemoryOtel) -> None:
    spans = engine_made.spans()
    cooldowns = _by_name(spans, "cooldown")
    assert cooldowns
    for cooldown in cooldowns:
        attrs = cooldown.attributes
        cause = _attempt_span(spans, attrs["ddscope.request_id"], attrs["ddscope.attempt"])
        assert [link.context.span_id for link in cooldown.links] == [cause.context.span_id]
        assert cause.attributes["error.type"] == "rate_limited"
        assert (
            attrs["gen_ai.provider.name"] == "mock"
            and attrs["ddscope.cooldown.cause"] == "rate_limited"
        )
        assert (
            attrs["ddscope.cooldown.retry_after_s"] == ENGINE_SPEC.retry_after_s
            and attrs["ddscope.cooldown.duration_s"] == ENGINE_SPEC.retry_after_s
        )


def test_limit_changes_drops_and_deferrals_are_span_events(engine_made: InMemoryOtel) -> None:
    spans = engine_made.spans()
    (domain,) = _by_name(spans, "domain ")
    changes = [(e.old, e.new, ORIGIN + e.t_ns) for e in EVENTS if e.kind == "limit_changed"]
    assert changes
    assert [
        (ev.attributes["ddscope.limit.old"], ev.attributes["ddscope.limit.new"], ev.timestamp)
        for ev in domain.events
        if ev.name == "limit_changed"
    ] == changes
    (group0,) = _by_name(spans, "row_group 0")
    (drop,) = [ev for ev in group0.events if ev.name == "row_dropped"]
    assert (
        drop.attributes["ddscope.reason"] == "client_error" and drop.attributes["ddscope.row"] == 3
    )
    deferred = [
        ev for s in _by_name(spans, "row_group") for ev in s.events if ev.name == "task_deferred"
    ]
    assert len(deferred) == sum(e.kind == "task_deferred" for e in EVENTS)
    dropped_lease = next(
        s for s in _by_name(spans, "task summary") if s.attributes["ddscope.task_id"] == "summary:3"
    )
    assert dropped_lease.status.status_code is StatusCode.ERROR
    assert dropped_lease.attributes["error.type"] == "client_error"


def test_breaker_and_shutdown_mark_the_domain_and_the_run() -> None:
    events = [
        RunStarted(t_ns=0, num_records=3, row_groups=1),
        BreakerChanged(
            t_ns=5,
            domain="mock/mock-model",
            state="open",
            reason="consecutive_429",
            consecutive_429=8,
        ),
        Shutdown(
            t_ns=6,
            reason="endpoint_saturated",
            message="mock/mock-model keeps answering 429",
            domain="mock/mock-model",
        ),
        RunFinished(
            t_ns=9,
            outcome="shutdown",
            reason="endpoint_saturated",
            message="stopped",
            rows_completed=0,
            rows_dropped=3,
        ),
    ]
    otel = InMemoryOtel().feed(HEADER, events)
    spans = otel.spans()
    (run,) = _by_name(spans, "run")
    assert run.status.status_code is StatusCode.ERROR and run.status.description == "stopped"
    assert run.attributes["error.type"] == "endpoint_saturated"
    (shutdown,) = run.events
    assert (
        shutdown.name == "shutdown"
        and shutdown.attributes["ddscope.reason"] == "endpoint_saturated"
    )
    (domain,) = _by_name(spans, "domain ")
    (breaker,) = domain.events
    assert breaker.attributes["ddscope.breaker.state"] == "open" and breaker.timestamp == ORIGIN + 5
    (opening,) = points(otel.metrics(), "ddscope.breaker.openings")
    assert opening.value == 1 and dict(opening.attributes) == {
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "mock-model",
    }


def test_a_cut_off_record_ends_open_spans_at_the_last_event_marked_unfinished() -> None:
    cut = EVENTS[: len(EVENTS) // 2]
    spans = InMemoryOtel().feed(HEADER, cut).spans()
    last = ORIGIN + cut[-1].t_ns
    unfinished = [s for s in spans if s.attributes.get("ddscope.unfinished")]
    assert {"run", "domain mock/mock-model"} <= {s.name for s in unfinished}
    assert all(s.end_time == last for s in unfinished)
    open_leases = {e.lease_id for e in cut if e.kind == "lease_started"} - {
        e.lease_id for e in cut if e.kind == "lease_finished"
    }
    assert len([s for s in unfinished if s.name.startswith("task ")]) == len(open_leases)
    assert all(s.end_time <= last for s in spans)


def test_live_and_replayed_spans_are_equal_for_an_engine_made_run(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    live = InMemoryOtel()
    bus = EventBus([JsonlRecorder(record), live.sink])
    bus.open(HEADER)
    for event in EVENTS:
        bus.emit(event)
    bus.close()
    replayed = replay(record)
    assert span_view(live.spans()) == span_view(replayed.spans())
    assert len(live.spans()) > sum(e.kind == "attempt_started" for e in EVENTS) > 30


def test_live_and_replayed_spans_are_equal_for_a_real_run(real) -> None:
    live, events, record = real
    kinds = Counter(e.kind for e in events)
    assert kinds["cooldown_started"] and kinds["salvage_started"] and kinds["row_dropped"]
    assert any(e.kind == "attempt_finished" and e.status_code == 429 for e in events)
    spans = live.spans()
    assert span_view(spans) == span_view(replay(record).spans())
    names = Counter(s.name for s in spans)
    assert names["chat mock-model"] == kinds["attempt_started"]
    assert names["cooldown"] == kinds["cooldown_started"] and names["salvage_round 1"] == 1


def test_spans_made_directly_equal_the_sdks_own_spans(
    real, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases, waits and attempts go to the span processors as finished spans (``direct``);
    without that path (another provider, a changed SDK) ``start_span`` makes the same spans."""
    _, _, record = real
    direct = replay(record)
    assert direct.sink._direct is not None
    monkeypatch.setattr(DirectSpans, "of", classmethod(lambda cls, provider, scope: None))
    sdk = replay(record)
    assert sdk.sink._direct is None
    assert span_view(direct.spans()) == span_view(sdk.spans())
    scopes = {
        (s.instrumentation_scope.name, s.instrumentation_scope.version) for s in direct.spans()
    }
    assert len(scopes) == 1


@pytest.mark.parametrize(
    "limits",
    [SpanLimits(), SpanLimits(max_span_attributes=2), SpanLimits(max_span_attribute_length=3)],
)
def test_direct_spans_keep_the_span_limits_as_the_sdk_does(limits: SpanLimits) -> None:
    provider = TracerProvider(span_limits=limits, shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    direct = DirectSpans.of(provider, tracer._instrumentation_scope)
    assert direct is not None
    parent = tracer.start_span("root").get_span_context()
    attrs = {"a": "abcdef", "b": 1, "c": True}
    direct.end("x", direct.child_context(parent), parent, SpanKind.INTERNAL, dict(attrs), 1, 2)
    tracer.start_span(
        "x", context=set_span_in_context(NonRecordingSpan(parent)), attributes=attrs
    ).end()
    ours, theirs = exporter.get_finished_spans()
    assert dict(ours.attributes) == dict(theirs.attributes)
    assert ours.dropped_attributes == theirs.dropped_attributes


def test_direct_spans_follow_the_runs_sampling_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert InMemoryOtel().feed(HEADER, EVENTS).spans() == []


def test_metrics_count_what_the_events_say(real) -> None:
    live, events, _ = real
    metrics = live.metrics()
    outcomes = Counter(e.outcome for e in events if e.kind == "attempt_finished")
    attempts = {
        p.attributes["ddscope.outcome"]: p.value
        for p in points(metrics, "ddscope.request.attempts")
    }
    # Every outcome is a series from the start; those that never happened stay at 0.
    assert attempts == {outcome: outcomes.get(outcome, 0) for outcome in ATTEMPT_OUTCOMES}
    (limited,) = points(metrics, "ddscope.request.rate_limited")
    assert limited.value == outcomes["rate_limited"]
    drops = Counter(e.reason for e in events if e.kind == "row_dropped")
    assert {
        p.attributes["ddscope.drop.reason"]: p.value
        for p in points(metrics, "ddscope.rows.dropped")
    } == {reason: drops.get(reason, 0) for reason in {*DROP_REASONS, *drops}}
    (finished,) = [e for e in events if e.kind == "run_finished"]
    assert points(metrics, "ddscope.rows.completed")[0].value == finished.rows_completed
    assert (
        points(metrics, "ddscope.salvage.rounds")[0].value
        == Counter(e.kind for e in events)["salvage_started"]
    )
    (in_flight,) = points(metrics, "ddscope.request.in_flight")
    assert in_flight.value == 0
    last_limit = [e for e in events if e.kind in ("limit_changed", "health")][-1]
    (limit,) = points(metrics, "ddscope.request.limit")
    expected = last_limit.new if last_limit.kind == "limit_changed" else last_limit.domains[0].limit
    assert limit.value == expected


def test_histograms_use_the_genai_bucket_boundaries(real) -> None:
    """The old GenAI names (the default, OTEL_SEMCONV_STABILITY_OPT_IN unset)."""
    live, events, _ = real
    metrics = live.metrics()
    assert not any(name.startswith("gen_ai.client.inference") for name in metrics)
    durations = points(metrics, "gen_ai.client.operation.duration")
    assert all(tuple(p.explicit_bounds) == DURATION_BUCKETS for p in durations)
    failed = {p.attributes.get("error.type") for p in durations} - {None}
    assert failed == {e.outcome for e in events if e.kind == "attempt_finished"} - {"ok"}
    tokens = {
        p.attributes["gen_ai.token.type"]: p for p in points(metrics, "gen_ai.client.token.usage")
    }
    assert all(tuple(p.explicit_bounds) == TOKEN_BUCKETS for p in tokens.values())
    finished = [e for e in events if e.kind == "attempt_finished" and e.input_tokens is not None]
    assert tokens["input"].sum == sum(e.input_tokens for e in finished)
    assert tokens["output"].count == len(finished)


OLD_GENAI = {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"}
NEW_GENAI = {
    "gen_ai.client.inference.duration",
    "gen_ai.client.inference.operation.input_tokens",
    "gen_ai.client.inference.operation.output_tokens",
    "gen_ai.client.inference.usage.input_tokens",
    "gen_ai.client.inference.usage.output_tokens",
}


@pytest.mark.parametrize(
    ("value", "old", "new"),
    [
        ("", True, False),
        ("http", True, False),
        ("gen_ai_latest_experimental", False, True),
        ("http/dup, gen_ai_latest_experimental", False, True),
        ("gen_ai_latest_experimental/dup", True, True),
    ],
)
def test_the_stability_opt_in_chooses_old_new_or_both(value: str, old: bool, new: bool) -> None:
    from ddscope.exporters.otel.genai import conventions

    assert conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": value}) == Conventions(old, new)


@pytest.mark.parametrize(("old", "new"), [(False, True), (True, True)])
def test_the_current_genai_metrics_when_opted_in(real, old: bool, new: bool) -> None:
    _, events, record = real
    metrics = replay(record, genai=Conventions(old, new)).metrics()
    names = {name for name in metrics if name.startswith("gen_ai.")}
    assert names == (OLD_GENAI if old else set()) | NEW_GENAI
    finished = [e for e in events if e.kind == "attempt_finished"]
    durations = points(metrics, "gen_ai.client.inference.duration")
    assert all(tuple(p.explicit_bounds) == DURATION_BUCKETS for p in durations)
    assert sum(p.count for p in durations) == len(finished)
    for kind in ("input", "output"):
        field = f"{kind}_tokens"
        spent = sum(getattr(e, field) or 0 for e in finished)
        (usage,) = points(metrics, f"gen_ai.client.inference.usage.{field}")
        assert usage.value == spent
        assert usage.attributes["gen_ai.token.modality"] == "unknown"
        assert usage.attributes["gen_ai.operation.name"] == "chat"
        per_operation = points(metrics, f"gen_ai.client.inference.operation.{field}")
        assert all(tuple(p.explicit_bounds) == TOKEN_BUCKETS for p in per_operation)
        # One measurement per attempt, failed ones too (0 tokens, with their error.type).
        assert sum(p.count for p in per_operation) == len(finished)
        assert sum(p.sum for p in per_operation) == spent
        failed = {p.attributes.get("error.type") for p in per_operation} - {None}
        assert failed == {e.outcome for e in finished} - {"ok"}


def test_docs_metrics_md_describes_every_metric_and_attribute(real) -> None:
    _, _, record = real
    metrics = replay(record, genai=Conventions(old=True, new=True)).metrics()
    doc = (Path(__file__).resolve().parent.parent / "docs" / "METRICS.md").read_text("utf-8")
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")}
    assert set(metrics) and {f"`{name}`" for name in metrics} <= rows
    for metric in metrics.values():
        for point in metric.data.data_points:
            assert {f"`{key}`" for key in point.attributes} <= rows, metric.name


def test_counters_are_zero_before_any_event() -> None:
    """Every counter and every known label set exists at 0 as soon as the run opens."""
    otel = InMemoryOtel(genai=Conventions(old=True, new=True))
    otel.sink.open(HEADER)
    metrics = otel.metrics()
    (domain,) = HEADER.domains
    attempts = points(metrics, "ddscope.request.attempts")
    assert {p.attributes["ddscope.outcome"] for p in attempts} == set(ATTEMPT_OUTCOMES)
    drops = points(metrics, "ddscope.rows.dropped")
    assert {p.attributes["ddscope.drop.reason"] for p in drops} == set(DROP_REASONS)
    counters = [
        "ddscope.request.rate_limited",
        "ddscope.request.admission_timeouts",
        "ddscope.breaker.openings",
        "ddscope.cooldown.time",
        "ddscope.rows.completed",
        "ddscope.salvage.rounds",
        "gen_ai.client.inference.usage.input_tokens",
        "gen_ai.client.inference.usage.output_tokens",
    ]
    for name in counters:
        series = points(metrics, name)
        assert series and all(p.value == 0 for p in series), name
        for point in series:
            assert point.attributes.get("gen_ai.request.model") in (None, domain.model)
    assert all(p.value == 0 for p in attempts + drops)


def test_no_metric_carries_an_id(real) -> None:
    live, _, _ = real
    allowed = {
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.operation.name",
        "gen_ai.token.type",
        "gen_ai.token.modality",
        "error.type",
        "ddscope.outcome",
        "ddscope.drop.reason",
    }
    metrics = live.metrics()
    assert len(metrics) == 19  # every instrument: counters with no event yet are there at 0
    for name, metric in metrics.items():
        for point in metric.data.data_points:
            assert set(point.attributes) <= allowed, name


@pytest.mark.parametrize(("recorded", "opted_in"), [(True, True), (True, False), (False, True)])
def test_prompt_and_completion_text_only_with_both_opt_ins(recorded: bool, opted_in: bool) -> None:
    header = HEADER.model_copy(update={"record_text": recorded})
    common = {"request_id": 1, "attempt": 1, "task_id": "summary:0", "domain": "mock/mock-model"}
    events = [
        AttemptStarted(t_ns=1, lease_id=7, prompt="Write about a", **common),
        AttemptFinished(t_ns=2, outcome="ok", status_code=200, completion="A is first.", **common),
    ]
    (chat,) = _by_name(InMemoryOtel(record_text=opted_in).feed(header, events).spans(), "chat ")
    if recorded and opted_in:
        (message,) = json.loads(chat.attributes["gen_ai.input.messages"])
        assert message == {"role": "user", "parts": [{"type": "text", "content": "Write about a"}]}
        (answer,) = json.loads(chat.attributes["gen_ai.output.messages"])
        assert answer["role"] == "assistant" and answer["parts"][0]["content"] == "A is first."
    else:
        assert not any("messages" in key for key in chat.attributes)
        assert "Write about a" not in repr(dict(chat.attributes))


def test_unknown_domains_get_a_span_and_orphan_finishes_are_ignored() -> None:
    header = HEADER.model_copy(update={"domains": []})
    common = {"request_id": 4, "attempt": 2, "task_id": "x:0", "domain": "other/model-x"}
    events = [
        WaitFinished(
            t_ns=1,
            request_id=99,
            attempt=1,
            task_id="y:0",
            domain="mock/mock-model",
            outcome="admitted",
        ),
        LeaseFinished(t_ns=1, lease_id=42, task_id="y:0", row_group=0, column="y", outcome="ok"),
        LeaseStarted(t_ns=2, lease_id=5, task_id="x:0", row_group=0, column="x", row=0),
        AttemptStarted(t_ns=3, lease_id=5, **common),
        AttemptFinished(
            t_ns=4, outcome="server_error", status_code=503, error="HTTP 503", **common
        ),
    ]
    otel = InMemoryOtel().feed(header, events)
    spans = otel.spans()
    (chat,) = _by_name(spans, "chat ")
    assert chat.name == "chat model-x" and chat.attributes["gen_ai.provider.name"] == "other"
    assert (
        chat.status.description == "HTTP 503" and chat.attributes["http.request.resend_count"] == 1
    )
    assert "server.address" not in chat.attributes
    assert [s.name for s in _by_name(spans, "domain ")] == ["domain other/model-x"]
    waiters = {
        p.attributes["gen_ai.provider.name"]: p.value
        for p in points(otel.metrics(), "ddscope.request.waiters")
    }
    assert waiters == {"other": 0}


def test_a_cooldown_started_while_its_attempt_is_open_links_to_that_attempt() -> None:
    common = {"request_id": 4, "attempt": 1, "task_id": "x:0", "domain": "mock/mock-model"}
    events = [
        LeaseStarted(t_ns=1, lease_id=5, task_id="x:0", row_group=0, column="x", row=0),
        WaitStarted(t_ns=2, lease_id=5, **common),
        WaitFinished(t_ns=3, outcome="timeout", **common),
        AttemptStarted(t_ns=4, lease_id=5, **common),
        CooldownStarted(t_ns=5, cooldown_id=1, domain="mock/mock-model", duration_s=1.0,
                        request_id=4, attempt=1),
        AttemptFinished(t_ns=6, outcome="rate_limited", status_code=429, error="429", **common),
    ]  # fmt: skip
    spans = InMemoryOtel().feed(HEADER, events).spans()
    (chat,) = _by_name(spans, "chat ")
    (cooldown,) = _by_name(spans, "cooldown")
    assert [link.context.span_id for link in cooldown.links] == [chat.context.span_id]
    assert (chat.start_time, chat.end_time) == (ORIGIN + 4, ORIGIN + 6)
    assert chat.attributes["http.response.status_code"] == 429
    assert chat.attributes["error.type"] == "rate_limited"
    assert chat.status.status_code is StatusCode.ERROR and chat.status.description == "429"
    (wait,) = _by_name(spans, "request.wait")
    assert (wait.start_time, wait.end_time) == (ORIGIN + 2, ORIGIN + 3)
    assert wait.attributes["error.type"] == "admission_timeout"
    assert wait.attributes["ddscope.outcome"] == "timeout"
    assert wait.status.status_code is StatusCode.ERROR


def test_a_tally_counts_per_attribute_set_and_merges_equal_dicts() -> None:
    tally = Tally()
    ok = {"gen_ai.provider.name": "p", "ddscope.outcome": "ok"}
    tally.add(ok)
    tally.add(ok, 2)
    tally.add(dict(ok))  # equal, another object: the same series
    tally.add({"gen_ai.provider.name": "p", "ddscope.outcome": "rate_limited"})
    tally.add(None, 0.5)
    totals = {tuple(sorted(a.items())) if a else (): t for a, t in tally.totals()}
    assert totals == {
        tuple(sorted(ok.items())): 4,
        (("ddscope.outcome", "rate_limited"), ("gen_ai.provider.name", "p")): 1,
        (): 0.5,
    }
