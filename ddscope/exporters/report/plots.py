"""Plot specifications: what each plot of the report shows, as plain data for ``report.js``.

A spec is a dict: ``id``, ``title``, ``help`` (one sentence under the title), ``kind``
(``time``: x is seconds since the run started; ``hist``: x is a duration on a log axis), ``x``,
``series`` (each ``label``, ``y``, ``color``, ``style`` — ``step``, ``line``, ``points`` or
``bars`` — and optionally ``scale: "r"`` for the right axis, ``fill_to`` (the index of the series
whose curve this one's area fills down to, for stacked areas), ``dash``, ``width``) and
``bands`` (shaded time ranges: ``label``, ``color``, ``ranges``). The script turns each spec into
a uPlot chart; keeping the choices here keeps the script generic and the specs testable.
"""

from __future__ import annotations

from typing import Any

from ddscope.exporters.report.series import IDLE_PARTS
from ddscope.exporters.report.view import DomainView, Numbers, RunView

Spec = dict[str, Any]

COLOR = {
    "rows": "#2e7d32",
    "dropped": "#c62828",
    "requests": "#1565c0",
    "rows_rate": "#2e7d32",
    "r429": "#d84315",
    "limit": "#6a1b9a",
    "in_flight": "#1565c0",
    "in_flight_max": "#90caf9",
    "waiters": "#ef6c00",
    "cooldown": "rgba(33,150,243,0.13)",
    "breaker": "rgba(211,47,47,0.16)",
    "salvage": "rgba(255,193,7,0.18)",
    "wait": "#ef6c00",
    "attempt": "#1565c0",
}
IDLE_COLORS = {
    "busy": "#43a047",
    "cooldown": "#42a5f5",
    "breaker": "#e53935",
    "shutdown": "#8d6e63",
    "limit": "#ab47bc",
    "waiters_ahead": "#ffb300",
    "awaiting_salvage": "#fdd835",
    "dependencies": "#90a4ae",
    "horizon": "#cfd8dc",
}
IDLE_LABELS = {
    "busy": "busy (on the wire)",
    "cooldown": "waiting: 429 cooldown",
    "breaker": "waiting: breaker",
    "shutdown": "waiting: shutdown",
    "limit": "waiting: AIMD limit",
    "waiters_ahead": "waiting: hand-off",
    "awaiting_salvage": "no ready work: awaiting salvage",
    "dependencies": "no ready work: inputs not done",
    "horizon": "no ready work: nothing admitted",
}


def series(label: str, y: Numbers, color: str, style: str = "step", **extra: Any) -> Spec:
    return {"label": label, "y": y, "color": color, "style": style, **extra}


def run_plots(view: RunView, prefix: str = "") -> list[Spec]:
    """The run-level plots: rows over time, throughput."""
    salvage = _salvage(view)
    return [
        {
            "id": f"{prefix}rows",
            "title": "Rows over time",
            "help": "Rows checkpointed (written) and rows dropped so far; shaded: salvage rounds.",
            "kind": "time",
            "x": view.x,
            "series": [
                series("rows done", view.series["rows_done"], COLOR["rows"], "line"),
                series("rows dropped", view.series["rows_dropped"], COLOR["dropped"], "line"),
            ],
            "bands": salvage,
        },
        {
            "id": f"{prefix}throughput",
            "title": "Throughput",
            "help": "Rows checkpointed, requests finished and 429 answers per second, averaged "
            "over a sliding window (1/60 of the run, or wider when events are few).",
            "kind": "time",
            "x": view.x,
            "series": [
                series("requests/s", view.series["requests_per_s"], COLOR["requests"], "line"),
                series("rows/s", view.series["rows_per_s"], COLOR["rows_rate"], "line"),
                series("429/s", view.series["rate_limited_per_s"], COLOR["r429"], "line"),
            ],
            "bands": salvage,
        },
    ]


def domain_plots(view: RunView, d: DomainView, prefix: str = "") -> list[Spec]:
    specs = [_concurrency(view, d, prefix), _idle(view, d, prefix), _latency(d, prefix)]
    if "quota_requests" in d.series:
        specs.append(_quota(view, d, prefix))
    return specs


def _quota(view: RunView, d: DomainView, prefix: str) -> Spec:
    return {
        "id": f"{prefix}{d.name}:quota",
        "title": f"{d.name}: quota the provider reported",
        "help": "The lowest x-ratelimit-remaining-requests (left axis) and -tokens (right axis) "
        "the provider answered with in each bin; gaps: no answer carried the header.",
        "kind": "time",
        "x": view.x,
        "series": [
            series("remaining requests", d.series["quota_requests"], COLOR["requests"], "points"),
            series(
                "remaining tokens", d.series["quota_tokens"], COLOR["limit"], "points", scale="r"
            ),
        ],
        "bands": [],
    }


def _concurrency(view: RunView, d: DomainView, prefix: str) -> Spec:
    s = d.series
    return {
        "id": f"{prefix}{d.name}:concurrency",
        "title": f"{d.name}: limit, in flight, waiters",
        "help": "AIMD limit, requests on the wire (mean and peak per bin) and requests waiting "
        "for admission; shaded blue: 429 cooldown, red: breaker open; dots: 429 answers per "
        "bin (right axis).",
        "kind": "time",
        "x": view.x,
        "series": [
            series("AIMD limit", s["limit_mean"], COLOR["limit"], width=2),
            series("in flight (peak)", s["in_flight_max"], COLOR["in_flight_max"], width=1),
            series("in flight (mean)", s["in_flight_mean"], COLOR["in_flight"]),
            series("waiters (mean)", s["waiters_mean"], COLOR["waiters"]),
            series("429s", s["r429"], COLOR["r429"], "points", scale="r"),
        ],
        "bands": [
            {"label": "cooldown", "color": COLOR["cooldown"], "ranges": d.cooldown_bands},
            {"label": "breaker open", "color": COLOR["breaker"], "ranges": d.breaker_bands},
        ],
    }


def _idle(view: RunView, d: DomainView, prefix: str) -> Spec:
    """Stacked: each series is the running sum of the parts below it, filled down to the
    previous one, so the top curve is the capacity (max_parallel_requests)."""
    parts = ["busy", *IDLE_PARTS]
    running: Numbers = [0.0] * len(view.x)
    stacked = []
    for i, part in enumerate(parts):
        values = d.series["busy" if part == "busy" else f"idle_{part}"]
        running = [round((r or 0.0) + (v or 0.0), 3) for r, v in zip(running, values, strict=True)]
        extra: dict[str, Any] = {"fill_to": i - 1} if i else {"fill_to": -1}
        stacked.append(series(IDLE_LABELS[part], running, IDLE_COLORS[part], **extra))
    return {
        "id": f"{prefix}{d.name}:idle",
        "title": f"{d.name}: where the {d.capacity} model slots went",
        "help": "Request slots over time, stacked: busy, idle while ready work waited (by "
        "cause), idle with no ready work (by cause). The top is the capacity.",
        "kind": "time",
        "x": view.x,
        "series": stacked,
        "bands": [],
    }


def _latency(d: DomainView, prefix: str) -> Spec:
    """Two distributions on one log axis; bars of ratio ≈ 1.27 (12 of the analyzer's log
    buckets each)."""
    xs = sorted({x for x, _ in d.wait_hist} | {x for x, _ in d.attempt_hist})
    waits, oks = dict(d.wait_hist), dict(d.attempt_hist)
    positive = [x for x in xs if x > 0] or [1e-3]
    return {
        "id": f"{prefix}{d.name}:latency",
        "title": f"{d.name}: request-wait and attempt latency",
        "help": "How long requests waited for admission (only those that waited) and how long "
        "successful attempts took: count per duration bucket, log scale.",
        "kind": "hist",
        "x": positive,
        "series": [
            series("request wait", [waits.get(x) for x in positive], COLOR["wait"], "bars"),
            series("attempt ok", [oks.get(x) for x in positive], COLOR["attempt"], "bars"),
        ],
        "bands": [],
    }


def _salvage(view: RunView) -> list[Spec]:
    if not view.salvage_bands:
        return []
    ranges = [(a, b) for a, b, _ in view.salvage_bands]
    return [{"label": "salvage round", "color": COLOR["salvage"], "ranges": ranges}]
