"""Attempt metrics measured once per batch (otel/attempt_metrics.py) are what the events say:
checked against figures computed here from the events themselves, for two domains, every
outcome mixed in, attempts without usage, several batches, and a reader collecting mid-run."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import defaultdict
from typing import Any

import pytest
from otel_support import InMemoryOtel, points
from test_otel import HEADER

from ddscope.events import AttemptFinished, AttemptStarted, DomainInfo, Event
from ddscope.exporters.otel.batch import BATCH_EVENTS
from ddscope.exporters.otel.genai import DURATION_BUCKETS, TOKEN_BUCKETS, Conventions
from ddscope.exporters.otel.metrics import ATTEMPT_OUTCOMES

DOMAINS = ("mock/mock-model", "other/model-x")
TWO_DOMAINS = HEADER.model_copy(
    update={
        "domains": [
            DomainInfo(domain=d, provider=d.split("/")[0], model=d.split("/")[1],
                       max_parallel_requests=4)
            for d in DOMAINS
        ]
    }
)  # fmt: skip


def attempts(
    count: int, domains: tuple[str, ...] = DOMAINS, ok_share: float = 0.7, seed: int = 7
) -> list[Event]:
    """``count`` attempts (start, then finish 1–400 ms later), each in one of ``domains``,
    ``ok_share`` of them ok, with usage on most of them."""
    rng = random.Random(seed)
    events: list[Event] = []
    t_ns = 1_000
    for request_id in range(1, count + 1):
        domain = rng.choice(domains)
        outcome = "ok" if rng.random() < ok_share else rng.choice(ATTEMPT_OUTCOMES[1:])
        common: dict[str, Any] = {"request_id": request_id, "attempt": 1,
                                  "task_id": f"c:{request_id}", "domain": domain}  # fmt: skip
        events.append(AttemptStarted(t_ns=t_ns, lease_id=request_id, **common))
        # every bucket, including the boundaries themselves
        seconds = rng.choice([*DURATION_BUCKETS[:6], rng.uniform(0.001, 0.4)])
        usage = rng.random() < 0.8
        input_tokens = rng.choice([*TOKEN_BUCKETS[:4], rng.randint(1, 900)])
        output_tokens = rng.randint(0, 300)
        events.append(
            AttemptFinished(
                t_ns=t_ns + round(seconds * 1e9),
                outcome=outcome,
                input_tokens=input_tokens if usage else None,
                output_tokens=output_tokens if usage else None,
                **common,
            )
        )
        t_ns += 10_000
    return events


def expected_histograms(events: list[Event]) -> dict[str, dict[tuple[Any, ...], Any]]:
    """Per metric and series: (count, sum, bucket counts, min, max), values in arrival order."""
    started = {e.request_id: e.t_ns for e in events if isinstance(e, AttemptStarted)}
    values: dict[str, dict[tuple[Any, ...], list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        if not isinstance(e, AttemptFinished):
            continue
        provider, model = e.domain.split("/")
        error = () if e.outcome == "ok" else (("error.type", e.outcome),)
        per_outcome = (provider, model, *error)
        values["duration"][per_outcome].append((e.t_ns - started[e.request_id]) / 1e9)
        for kind, tokens in (("input", e.input_tokens), ("output", e.output_tokens)):
            if tokens is not None:
                values[f"old {kind}"][(provider, model, kind)].append(tokens)
            values[f"new {kind}"][per_outcome].append(tokens or 0)
    out: dict[str, dict[tuple[Any, ...], Any]] = {}
    for metric, series in values.items():
        bounds = DURATION_BUCKETS if metric == "duration" else TOKEN_BUCKETS
        out[metric] = {}
        for key, measured in series.items():
            buckets = [0] * (len(bounds) + 1)
            total: float = 0
            for value in measured:
                buckets[bisect_left(bounds, value)] += 1
                total += value
            summary = (len(measured), total, buckets, min(measured), max(measured))
            out[metric][key] = summary
    return out


def collected(metrics: dict[str, Any], name: str, *extra: str) -> dict[tuple[Any, ...], Any]:
    by_series = {}
    for p in points(metrics, name):
        a = p.attributes
        key = (a["gen_ai.provider.name"], a["gen_ai.request.model"])
        key += tuple(a[k] for k in extra) + (
            (("error.type", a["error.type"]),) if "error.type" in a else ()
        )
        by_series[key] = (p.count, p.sum, list(p.bucket_counts), p.min, p.max)
    return by_series


@pytest.mark.parametrize(
    ("domains", "ok_share"),
    [(DOMAINS, 0.7), (DOMAINS[:1], 0.7), (DOMAINS[:1], 1.0)],
    ids=["two_domains", "one_domain", "one_group"],  # one group: the usual batch's short path
)
@pytest.mark.parametrize("count", [BATCH_EVENTS * 3 + 17, 20])
def test_attempt_metrics_are_what_the_events_say(
    count: int, domains: tuple[str, ...], ok_share: float
) -> None:
    events = attempts(count, domains, ok_share)
    otel = InMemoryOtel(genai=Conventions(old=True, new=True)).feed(TWO_DOMAINS, events)
    metrics = otel.metrics()
    expected = expected_histograms(events)
    assert collected(metrics, "gen_ai.client.operation.duration") == expected["duration"]
    assert collected(metrics, "gen_ai.client.inference.duration") == expected["duration"]
    assert (
        collected(metrics, "gen_ai.client.token.usage", "gen_ai.token.type")
        == expected["old input"] | expected["old output"]
    )
    for kind in ("input", "output"):
        per_operation = f"gen_ai.client.inference.operation.{kind}_tokens"
        assert collected(metrics, per_operation) == expected[f"new {kind}"]
        usage = {
            p.attributes["gen_ai.provider.name"]: p.value
            for p in points(metrics, f"gen_ai.client.inference.usage.{kind}_tokens")
        }
        spent = {d.split("/")[0]: 0 for d in DOMAINS}  # every header domain, from 0
        for e in events:
            if isinstance(e, AttemptFinished):
                spent[e.domain.split("/")[0]] += getattr(e, f"{kind}_tokens") or 0
        assert usage == spent
    finished = [e for e in events if isinstance(e, AttemptFinished)]
    counted = {
        (p.attributes["gen_ai.provider.name"], p.attributes["ddscope.outcome"]): p.value
        for p in points(metrics, "ddscope.request.attempts")
    }
    assert counted == {
        (d.split("/")[0], o): sum(e.domain == d and e.outcome == o for e in finished)
        for d in DOMAINS
        for o in ATTEMPT_OUTCOMES
    }
    limited = {
        p.attributes["gen_ai.provider.name"]: p.value
        for p in points(metrics, "ddscope.request.rate_limited")
    }
    assert limited == {
        d.split("/")[0]: sum(e.domain == d and e.outcome == "rate_limited" for e in finished)
        for d in DOMAINS
    }


def test_a_reader_collecting_mid_batch_sees_every_finished_attempt() -> None:
    """A collection between batches processes the queued events first: the attempts finished
    so far are all counted, and nothing is counted twice by the next batch."""
    events = attempts(40)
    otel = InMemoryOtel()
    otel.sink.open(TWO_DOMAINS)
    for event in events[:30]:  # 15 attempts, fewer events than a batch
        otel.sink.handle(event)
    first = otel.metrics()
    assert sum(p.value for p in points(first, "ddscope.request.attempts")) == 15
    assert sum(p.count for p in points(first, "gen_ai.client.operation.duration")) == 15
    for event in events[30:]:
        otel.sink.handle(event)
    otel.sink.close()
    second = otel.metrics()
    assert sum(p.value for p in points(second, "ddscope.request.attempts")) == 40
    assert sum(p.count for p in points(second, "gen_ai.client.operation.duration")) == 40
