"""FastHistogram (otel/histograms.py) collects what plain ``Histogram.record`` collects."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider

from ddscope.exporters.otel.histograms import FastHistogram

OK = {"gen_ai.provider.name": "mock", "gen_ai.request.model": "m", "ddscope.outcome": "ok"}
FAILED = {**OK, "ddscope.outcome": "server_error"}
# Values on the boundaries (0.01, 0.1, 1, 10 below) belong to the bucket they close.
VALUES = [0.003, 0.2, 0.2, 7.5, 0.0, 120.0, 0.049, 0.01, 0.1, 1.0, 10.0, 10.000001, 4]


def points(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    assert data is not None
    out = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for p in metric.data.data_points:
                    series = tuple(sorted((p.attributes or {}).items()))
                    if isinstance(p, ExponentialHistogramDataPoint):
                        buckets = (p.scale, p.positive.offset, tuple(p.positive.bucket_counts))
                    else:
                        assert isinstance(p, HistogramDataPoint)
                        buckets = tuple(p.bucket_counts)
                    out.append((metric.name, series, p.count, p.sum, p.min, p.max, buckets))
    return sorted(out)


def record_all(how: str, reader: InMemoryMetricReader, views: list[View]) -> list[Any]:
    """``how``: "sdk" (``Histogram.record``), "fast" (``FastHistogram.record``) or "many"
    (``FastHistogram.record_many``, a group of values at a time, as attempt_metrics does)."""
    provider = MeterProvider(metric_readers=[reader], views=views)
    histogram = provider.get_meter("t").create_histogram(
        "h", "s", explicit_bucket_boundaries_advisory=(0.01, 0.1, 1, 10)
    )
    fast_histogram = FastHistogram(histogram)
    record = fast_histogram.record if how == "fast" else histogram.record
    collected = []
    for round_ in range(3):  # values, a collection, more values: nothing lost or doubled
        if how == "many":
            fast_histogram.record_many([value + round_ for value in VALUES], OK)
            fast_histogram.record_many([value * 2 for value in VALUES], FAILED)
            fast_histogram.record_many([1.5, -1.0], OK)  # one bad value: each on its own
            fast_histogram.record_many([float("inf")], FAILED)
        else:
            for value in VALUES:
                record(value + round_, OK)
                record(value * 2, FAILED)
            record(1.5, OK)
            record(-1.0, OK)  # rejected by the SDK either way
            record(float("inf"), FAILED)  # rejected by SDK 1.45, kept by 1.43: the same here
        fast_histogram.fold()  # what the sink does after each batch of events
        collected.append(points(reader))
    provider.shutdown()
    return collected


@pytest.mark.parametrize(
    ("temporality", "views"),
    [
        (AggregationTemporality.CUMULATIVE, []),
        (AggregationTemporality.DELTA, []),
        (
            AggregationTemporality.CUMULATIVE,
            [View(instrument_name="h", attribute_keys={"ddscope.outcome"})],
        ),
        (
            AggregationTemporality.CUMULATIVE,
            [View(instrument_name="h", aggregation=ExponentialBucketHistogramAggregation())],
        ),
    ],
    ids=["cumulative", "delta", "view_keeps_one_key", "exponential_buckets"],
)
def test_fast_histogram_collects_what_record_collects(
    temporality: AggregationTemporality, views: list[View]
) -> None:
    def reader() -> InMemoryMetricReader:
        return InMemoryMetricReader(preferred_temporality={SdkHistogram: temporality})

    expected = record_all("sdk", reader(), views)
    assert expected[0] and expected[0][0][2] > 0  # something was collected
    assert record_all("fast", reader(), views) == expected
    assert record_all("many", reader(), views) == expected


def test_fast_path_is_taken_after_the_first_value() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fast = FastHistogram(provider.get_meter("t").create_histogram("h"))
    calls: list[float] = []
    real = fast.histogram.record

    def counted(amount: float, attributes: Any = None, context: Any = None) -> None:
        calls.append(amount)
        real(amount, attributes, context)

    fast.histogram.record = counted  # type: ignore[method-assign]
    for value in VALUES:
        fast.record(value, OK)
    assert len(calls) == 1  # the first value only: the SDK created the aggregation
    assert points(reader)[0][2] == 1  # the others wait for the fold
    fast.fold()
    assert points(reader)[0][2] == len(VALUES)
    assert len(calls) == 1


class AboveOne(ExemplarFilter):
    """A filter the fast path does not know: it is asked value by value."""

    def should_sample(
        self, value: float, time_unix_nano: int, attributes: Any, context: Any
    ) -> bool:
        return value > 1


def exemplar_values(fast: bool, exemplar_filter: ExemplarFilter, in_span: bool) -> list[Any]:
    """(series, count, sum, exemplar values) after recording VALUES with ``exemplar_filter``,
    the fold run inside a sampled span or not."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=exemplar_filter)
    histogram = provider.get_meter("t").create_histogram("h")
    fast_histogram = FastHistogram(histogram)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    with tracer.start_as_current_span("batch") if in_span else contextlib.nullcontext():
        for value in VALUES:
            (fast_histogram.record if fast else histogram.record)(value, OK)
        fast_histogram.fold()
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(point, HistogramDataPoint)
    provider.shutdown()
    return [point.count, point.sum, sorted(e.value for e in point.exemplars)]


@pytest.mark.parametrize("in_span", [False, True], ids=["no_span", "in_sampled_span"])
@pytest.mark.parametrize(
    "exemplar_filter",
    [AlwaysOffExemplarFilter(), AlwaysOnExemplarFilter(), TraceBasedExemplarFilter(), AboveOne()],
    ids=["always_off", "always_on", "trace_based", "custom"],
)
def test_fast_histogram_takes_the_exemplars_record_takes(
    exemplar_filter: ExemplarFilter, in_span: bool
) -> None:
    """The filter's verdict is asked once a fold for the SDK's filters (it does not depend on
    the value) and value by value for any other; the exemplars are the same as ``record``'s."""
    expected = exemplar_values(False, exemplar_filter, in_span)
    assert expected[0] == len(VALUES)
    assert exemplar_values(True, exemplar_filter, in_span) == expected
