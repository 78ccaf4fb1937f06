"""The GenAI client metrics of each request attempt, in the conventions the user chose.

The OpenTelemetry GenAI conventions moved to their own repository (semantic-conventions-genai)
and renamed the inference metrics (see its ``docs/gen-ai/non-normative/migration.md``):

=====================================================  ==================================
old (semantic-conventions ≤ v1.41)                     now (semantic-conventions-genai)
=====================================================  ==================================
``gen_ai.client.operation.duration`` (histogram)       ``gen_ai.client.inference.duration``
``gen_ai.client.token.usage`` (histogram,              ``gen_ai.client.inference.usage.
``gen_ai.token.type`` = input / output)                {input,output}_tokens`` (counters,
                                                       ``gen_ai.token.modality``) and
                                                       ``gen_ai.client.inference.operation.
                                                       {input,output}_tokens`` (histograms)
=====================================================  ==================================

``OTEL_SEMCONV_STABILITY_OPT_IN`` (comma-separated, read by every OTel instrumentation in the
process) chooses: unset → **old**; ``gen_ai_latest_experimental`` → **new**;
``gen_ai_latest_experimental/dup`` → **both** (the ``/dup`` form of the HTTP and database
migrations), for moving dashboards over without a gap.

Why old by default: that is the OpenTelemetry rule for a convention that changes under existing
users (keep emitting what you emitted until they opt in), and the OTel GenAI instrumentations a
DataDesigner user may also run (openai-v2 and others) read the same variable, so one setting
gives one naming in the backend. ddscope's Grafana dashboards read either name.

Attributes are built once per (domain, outcome) and reused (``DomainState``'s
``*_attributes``); attempts are measured a batch at a time (``attempt_metrics``); the usage
counters are tallies read on collection, like every ddscope counter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ddscope.exporters.otel.histograms import FastHistogram, fast_histogram
from ddscope.exporters.otel.metrics import DomainState, Tally

_Callback = Callable[[CallbackOptions], Iterable[Observation]]

SEMCONV_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST = "gen_ai_latest_experimental"
OPERATION = "chat"
UNKNOWN_MODALITY = "unknown"  # chat completions do not break usage down by modality
# GenAI semantic conventions: explicit bucket boundaries for the duration and token histograms.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip


@dataclass(frozen=True)
class Conventions:
    """Which GenAI metric names to emit."""

    old: bool
    new: bool

    @property
    def name(self) -> str:
        return "both" if self.old and self.new else "new" if self.new else "old"


def conventions(environ: Mapping[str, str] | None = None) -> Conventions:
    """The choice made by ``OTEL_SEMCONV_STABILITY_OPT_IN`` (see the module's docstring)."""
    env = os.environ if environ is None else environ
    tokens = {t.strip().lower() for t in env.get(SEMCONV_ENV, "").split(",")}
    if f"{LATEST}/dup" in tokens:
        return Conventions(old=True, new=True)
    if LATEST in tokens:
        return Conventions(old=False, new=True)
    return Conventions(old=True, new=False)


class GenAiMetrics:
    """The GenAI client instruments of :class:`Conventions` on ``meter``."""

    def __init__(
        self, meter: Meter, chosen: Conventions, observer: Callable[[_Callback], _Callback]
    ) -> None:
        """``observer`` wraps a counter's callback (``RunInstruments.observer``: queued events
        are processed before a reader observes)."""
        self.conventions = chosen
        self.histograms: list[FastHistogram] = []  # folded by the sink after each batch
        # Tallies exist in every mode (the sink zeroes them per domain); observed only if new.
        self.input_usage = Tally()
        self.output_usage = Tally()
        histogram = fast_histogram(meter, self.histograms)
        if chosen.old:
            self._old_duration = histogram(
                "gen_ai.client.operation.duration",
                "s",
                "GenAI operation duration",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            self._old_tokens = histogram(
                "gen_ai.client.token.usage",
                "{token}",
                "Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
        if chosen.new:
            self._new_instruments(meter, observer)

    def _new_instruments(self, meter: Meter, observer: Callable[[_Callback], _Callback]) -> None:
        histogram = fast_histogram(meter, self.histograms)
        self._duration = histogram(
            "gen_ai.client.inference.duration",
            "s",
            "GenAI inference operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._input_tokens = histogram(
            "gen_ai.client.inference.operation.input_tokens",
            "{token}",
            "Input (prompt) tokens used per inference operation",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._output_tokens = histogram(
            "gen_ai.client.inference.operation.output_tokens",
            "{token}",
            "Output (completion) tokens used per inference operation",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        usage = (
            ("input", "Input (prompt) tokens used", self.input_usage),
            ("output", "Output (completion) tokens used", self.output_usage),
        )
        for kind, description, tally in usage:
            name = f"gen_ai.client.inference.usage.{kind}_tokens"
            callback = observer(tally.observe)
            meter.create_observable_counter(name, [callback], "{token}", description)

    def zero(self, domain: DomainState) -> None:
        """The usage counters of ``domain`` at 0, so they exist from the first collection."""
        attrs = usage_attributes(domain)
        self.input_usage.add(attrs, 0)
        self.output_usage.add(attrs, 0)

    def record_group(
        self,
        domain: DomainState,
        outcome: str,
        durations: Sequence[float],
        inputs: Sequence[int | None],
        outputs: Sequence[int | None],
    ) -> None:
        """Finished attempts of one domain with one outcome (``attempt_metrics``): their
        durations, and the tokens each reported (None: no usage came back)."""
        chosen = self.conventions
        if chosen.old:
            self._old_duration.record_many(durations, domain.duration_attributes(outcome))
            for kind, reported in (("input", inputs), ("output", outputs)):
                counted = [tokens for tokens in reported if tokens is not None]
                if counted:
                    self._old_tokens.record_many(counted, domain.token_attributes(kind))
        if chosen.new:
            attrs = domain.duration_attributes(outcome)  # the same attributes as before
            self._duration.record_many(durations, attrs)
            # Recorded for every attempt, failed ones too (0 when no usage came back).
            input_counts = [tokens or 0 for tokens in inputs]
            output_counts = [tokens or 0 for tokens in outputs]
            self._input_tokens.record_many(input_counts, attrs)
            self._output_tokens.record_many(output_counts, attrs)
            usage = usage_attributes(domain)
            if spent := sum(input_counts):
                self.input_usage.add(usage, spent)
            if spent := sum(output_counts):
                self.output_usage.add(usage, spent)


def usage_attributes(domain: DomainState) -> dict[str, str]:
    """The (reused) attributes of the usage counters of ``domain``."""
    attrs = domain.usage_attrs
    if not attrs:
        attrs.update(domain.metric_attrs)
        attrs["gen_ai.operation.name"] = OPERATION
        attrs["gen_ai.token.modality"] = UNKNOWN_MODALITY
    return attrs
