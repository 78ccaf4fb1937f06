"""One root exception for everything ddscope raises on purpose.

::

    DdscopeError
    ├── ConfigError            bad pipeline / option; names the field (exit 2)
    ├── RecordError            unreadable run record; names file:line (exit 2)
    └── TaskError              one task failed; ``kind`` is an events.ErrorKind
        ├── ModelError         the model endpoint failed (see engine.client.answers.classify)
        │   ├── RateLimited        429; ``retry_after_s`` parsed from Retry-After
        │   ├── ServerError        5xx
        │   ├── ClientError        other 4xx (not retryable)
        │   ├── RequestTimeout     no answer within the model timeout
        │   ├── ConnectionFailed   connect refused / reset / protocol error
        │   └── BadResponse        2xx that is not a chat completion
        ├── AdmissionTimeout   local: request admission's acquire timed out (retryable)
        ├── BreakerOpen        local: the domain's circuit breaker refused the request
        └── TemplateError      local: a prompt or expression could not be rendered

``TaskError.retryable`` decides deferral (retry in a salvage round) versus a row drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope.events import RETRYABLE_KINDS

if TYPE_CHECKING:
    from ddscope.engine.admission.quota import RateLimitHeaders


class DdscopeError(Exception):
    """Root of every error ddscope raises on purpose."""


class ConfigError(DdscopeError):
    """A pipeline, option or environment value is invalid. The message names the field."""


class RecordError(DdscopeError):
    """A run record cannot be read. The message starts with ``file:line:``."""


class TaskError(DdscopeError):
    kind: str = "task_error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


class ModelError(TaskError):
    kind = "model_error"
    # From the answer's headers, when there was an answer (set by the model client): a 503 may
    # say when to come back too, and any answer may carry the provider's x-ratelimit-* quota.
    retry_after_s: float | None = None
    ratelimit: RateLimitHeaders | None = None


class RateLimited(ModelError):
    kind = "rate_limited"

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_s = retry_after_s


class ServerError(ModelError):
    kind = "server_error"


class ClientError(ModelError):
    kind = "client_error"


class RequestTimeout(ModelError):
    kind = "timeout"


class ConnectionFailed(ModelError):
    kind = "connection_error"


class BadResponse(ModelError):
    kind = "bad_response"


class AdmissionTimeout(TaskError):
    kind = "admission_timeout"


class BreakerOpen(TaskError):
    kind = "breaker_open"

    def __init__(self, message: str, *, domain: str) -> None:
        super().__init__(message)
        self.domain = domain


class TemplateError(TaskError):
    kind = "template_error"


# What a consumer of a record raises when an event's field has the wrong type or an impossible
# value: the readers' fast path checks only kind, t_ns and required fields (millions of events),
# so the CLI reads such a record again, validated, to name the line (``cli/bad_values.py``).
BAD_VALUE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)
