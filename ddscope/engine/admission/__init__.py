"""Request admission, one gate per (provider, model) domain: the AIMD limit and startup ramp,
429 cooldowns (Retry-After), FIFO waiters with acquire timeouts, the circuit breaker and the
patient (``wait``) policy. Pure parts (AIMD, breaker, cooldown) take the time as an argument.

Entry points: :class:`RequestAdmission` (all domains of a run) and :class:`RequestGate` (one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports

if TYPE_CHECKING:
    from ddscope.engine.admission.gate import RequestAdmission, RequestGate

__all__ = ["RequestAdmission", "RequestGate"]
_LAZY = {
    "RequestAdmission": "ddscope.engine.admission.gate",
    "RequestGate": "ddscope.engine.admission.gate",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
