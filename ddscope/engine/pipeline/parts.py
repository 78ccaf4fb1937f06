"""The parts of a pipeline: providers, model aliases, columns and run settings.

Each part checks its own fields (types, positive sizes, sampler arguments, names); the checks
across parts (unknown references, duplicates, cycles) are :class:`~ddscope.engine.pipeline.model.
Pipeline`'s. Models are frozen and forbid unknown keys, so a typo is an error naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ddscope.engine.pipeline.templates import NAME_PATTERN

# Provider names and aliases end up in domains ("provider/model") and metric labels.
_LABEL = re.compile(r"[A-Za-z0-9_.-]+\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Loc = tuple[str | int, ...]


class PipelineProblem(ValueError):
    """A problem found by a validator, with the field path (relative to where it was raised)."""

    def __init__(self, loc: Loc, problem: str) -> None:
        super().__init__(problem)
        self.loc = loc
        self.problem = problem


class ConfigModel(BaseModel):
    # hide_input_in_errors: a raw ValidationError must not print a pasted key back.
    # allow_inf_nan=False: "inf" seconds or parallelism is never meant (None means "no limit").
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False
    )


def _check_label(value: str, what: str) -> str:
    if not _LABEL.match(value):
        raise PipelineProblem((), f"{what} {value!r} may only use letters, digits, '_', '-', '.'")
    return value


class Provider(ConfigModel):
    name: str
    endpoint: str  # base URL including /v1, e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # the NAME of the environment variable holding the key
    # A success body larger than this is a bad_response, not read into memory (issue 19).
    max_response_bytes: int = Field(8 * 1024 * 1024, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_label(value, "provider name")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        # The value is not echoed: a URL may carry credentials.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PipelineProblem((), "must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise PipelineProblem(
                (),
                "must not contain credentials; name the environment "
                "variable holding the key in api_key_env",
            )
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            # Requests go to ENDPOINT/chat/completions: a query would be dropped (and a key in
            # one, e.g. ?api-key=…, would be printed with the URL in errors).
            raise PipelineProblem(
                (),
                "must not have a query string or fragment; a key belongs in an environment "
                "variable named by api_key_env",
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise PipelineProblem((), "has a port that is not a number from 0 to 65535") from None
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env(cls, value: str | None) -> str | None:
        # The value is not echoed: a user who pasted the key itself here must not see it logged.
        if value is not None and not _ENV_NAME.match(value):
            raise PipelineProblem(
                (),
                "must be the name of an environment variable (letters, digits, '_'), "
                "not the key itself",
            )
        return value


class ModelAlias(ConfigModel):
    alias: str
    provider: str
    model: str = Field(min_length=1)
    max_parallel_requests: int = Field(4, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0)
    ramp_s: float = Field(0.0, ge=0)  # request-admission startup ramp

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return _check_label(value, "model alias")

    @property
    def domain(self) -> str:
        return f"{self.provider}/{self.model}"


class _ColumnBase(ConfigModel):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise PipelineProblem(
                (),
                f"column name {value!r} must be an identifier "
                "(letters, digits, '_'; not starting with a digit)",
            )
        if value.startswith("_"):
            raise PipelineProblem(
                (),
                f"column name {value!r}: names starting with '_' are "
                "reserved (the output adds '_row')",
            )
        return value

    def templates(self) -> dict[str, str]:
        """Field name → template text, for the fields that read other columns."""
        return {}


class SamplerColumn(_ColumnBase):
    type: Literal["sampler"] = "sampler"
    sampler: Literal["category", "uniform_int", "uniform_float", "uuid"]
    values: list[str] | None = None
    weights: list[float] | None = None
    low: float | None = None
    high: float | None = None

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        # YAML turns `values: [1, 2]` into numbers; category values are labels.
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value

    @model_validator(mode="after")
    def _fits_sampler(self) -> SamplerColumn:
        if self.sampler == "category":
            self._check_category()
        else:
            self._reject(("values", "weights"), f"{self.sampler} samplers")
        if self.sampler in ("uniform_int", "uniform_float"):
            self._check_range()
        else:
            self._reject(("low", "high"), f"{self.sampler} samplers")
        return self

    def _check_category(self) -> None:
        if not self.values:
            raise PipelineProblem(("values",), "a category sampler needs a non-empty list")
        if self.weights is None:
            return
        if len(self.weights) != len(self.values):
            raise PipelineProblem(
                ("weights",), f"{len(self.weights)} weights for {len(self.values)} values"
            )
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise PipelineProblem(("weights",), "weights must be >= 0 with a positive sum")

    def _check_range(self) -> None:
        for field in ("low", "high"):
            if getattr(self, field) is None:
                raise PipelineProblem((field,), f"required by {self.sampler} samplers")
        assert self.low is not None and self.high is not None
        if self.low > self.high:
            raise PipelineProblem(("high",), f"high ({self.high:g}) is below low ({self.low:g})")
        if self.sampler == "uniform_int" and not (self.low.is_integer() and self.high.is_integer()):
            raise PipelineProblem(("low",), "uniform_int bounds must be whole numbers")

    def _reject(self, fields: tuple[str, ...], where: str) -> None:
        for field in fields:
            if getattr(self, field) is not None:
                raise PipelineProblem((field,), f"not used by {where}")


class LlmTextColumn(_ColumnBase):
    type: Literal["llm_text"] = "llm_text"
    model: str  # a model alias
    prompt: str = Field(min_length=1)
    system_prompt: str | None = None

    def templates(self) -> dict[str, str]:
        found = {"prompt": self.prompt}
        if self.system_prompt:
            found["system_prompt"] = self.system_prompt
        return found


class ExpressionColumn(_ColumnBase):
    type: Literal["expression"] = "expression"
    expr: str

    def templates(self) -> dict[str, str]:
        return {"expr": self.expr}


Column = Annotated[SamplerColumn | LlmTextColumn | ExpressionColumn, Field(discriminator="type")]
COLUMN_TYPES: dict[str, type[_ColumnBase]] = {
    "sampler": SamplerColumn,
    "llm_text": LlmTextColumn,
    "expression": ExpressionColumn,
}


class RunSettings(ConfigModel):
    # At most int64, as the CLI's -n: the record must be able to carry it and read it back.
    num_records: int = Field(10, gt=0, le=2**63 - 1)
    buffer_size: int = Field(10, gt=0, le=2**63 - 1)  # rows per row group
    row_groups_in_flight: Annotated[int, Field(gt=0)] | Literal["adaptive"] = "adaptive"
    max_row_groups_in_flight: int = Field(8, gt=0)  # hard cap for adaptive
    salvage_rounds: int = Field(2, ge=0)
    salvage_pause_s: float = Field(0.5, ge=0)
    max_attempts_in_pass: int = Field(3, gt=0)  # attempts within a pass before deferral
    error_rate_window: int = Field(50, gt=0)
    error_rate_threshold: float = Field(0.5, gt=0, le=1)
    acquire_timeout_s: float | None = Field(30.0, gt=0)
    # Request admission (one gate per provider/model). These are the ONLY defaults: the
    # admission value objects (admission/types.py, aimd.py) read them from here.
    aimd_decrease_factor: float = Field(0.75, gt=0, lt=1)  # limit × this on a 429 (once a wave)
    aimd_successes_per_increase: int = Field(25, gt=0)  # +aimd_increase_step per this many
    aimd_increase_step: int = Field(1, gt=0)
    breaker_policy: Literal["fail_fast", "wait"] = "fail_fast"
    # The breaker opens when, over breaker_window_s of sustained pressure, at least
    # breaker_min_attempts attempts were made and breaker_refused_share of them refused (429
    # outside a spent quota). 20 s outlasts a 15 s outage; 0.8 leaves a 70 % refusal rate
    # "degraded but serving" (README, "How the engine decides").
    breaker_window_s: float = Field(20.0, gt=0)
    breaker_min_attempts: int = Field(6, gt=0)
    breaker_refused_share: float = Field(0.8, gt=0, le=1)
    # wait policy: total time the run waits on a saturated domain before stopping
    breaker_max_wait_s: float = Field(900.0, gt=0)
    default_cooldown_s: float = Field(2.0, ge=0)  # a 429 without Retry-After
    min_cooldown_s: float = Field(0.25, gt=0)  # every 429 pauses at least this ("Retry-After: 0")
    max_cooldown_s: float = Field(60.0, gt=0)  # cap on Retry-After and quota resets
    # In-pass retries of 5xx, timeouts and connection errors: full jitter,
    # uniform(0, min(retry_backoff_max_s, retry_backoff_base_s × 2^(n−1))) before try n+1.
    retry_backoff_base_s: float = Field(0.5, ge=0)
    retry_backoff_max_s: float = Field(8.0, ge=0)
    health_interval_s: float = Field(2.0, gt=0)
    record_text: bool = False  # opt-in: prompts and completions in run.jsonl
    seed: int = 0

    @field_validator(
        "num_records",
        "buffer_size",
        "max_row_groups_in_flight",
        "salvage_rounds",
        "max_attempts_in_pass",
        "error_rate_window",
        "seed",
        mode="before",
    )
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        # YAML `true` is a bool, and a bool is an int to Python: `num_records: true` is a slip.
        if isinstance(value, bool):
            raise PipelineProblem((), f"must be a whole number, not {str(value).lower()}")
        return value

    @field_validator("row_groups_in_flight", mode="before")
    @classmethod
    def _groups_in_flight(cls, value: Any) -> Any:
        # Checked before the union so a bad value gets one plain message, not one per member.
        if value == "adaptive" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        raise PipelineProblem((), "must be a positive integer or 'adaptive'")

    @model_validator(mode="after")
    def _cooldowns(self) -> RunSettings:
        for name in ("default_cooldown_s", "min_cooldown_s"):
            value = getattr(self, name)
            if value > self.max_cooldown_s:
                raise PipelineProblem(
                    (name,), f"is above max_cooldown_s ({value:g} > {self.max_cooldown_s:g})"
                )
        if self.retry_backoff_base_s > self.retry_backoff_max_s:
            raise PipelineProblem(
                ("retry_backoff_base_s",),
                f"is above retry_backoff_max_s "
                f"({self.retry_backoff_base_s:g} > {self.retry_backoff_max_s:g})",
            )
        return self
