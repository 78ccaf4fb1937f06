"""429 cooldowns rebuilt from DataDesigner's observations of ``cooldown_remaining_seconds``.

DataDesigner keeps one ``blocked_until`` per request resource and every 429 pushes it out; it
publishes the remaining time, not start/end events. An observation ``(t, remaining)`` means
"blocked until t + remaining". A cooldown opens at the first such observation, is the same
cooldown while later observations end within ``SAME_END_NS`` of it, and a later end starts a new
one (the old one is cut there). The end is emitted when the translator's clock passes it, so the
output stays in time order. Only what was observed exists: from a file, a cooldown that began
and ended between two health snapshots is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SAME_END_NS = 50_000_000  # 50 ms: the same blocked_until, seen twice with clock jitter


@dataclass
class _Open:
    cooldown_id: int
    end_ns: int


class Cooldowns:
    """All domains' cooldowns. ``observe`` and ``due`` append ddscope event dicts to ``out``."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._next_id = 0

    def observe(
        self,
        out: list[dict[str, Any]],
        t_ns: int,
        domain: str,
        remaining_s: float,
        cause: tuple[int, int] | None = None,
    ) -> None:
        if remaining_s <= 0:
            return
        end = t_ns + int(remaining_s * 1e9)
        current = self._open.get(domain)
        if current is not None:
            if end <= current.end_ns + SAME_END_NS:
                return
            self._finish(out, domain, min(t_ns, current.end_ns))
        self._next_id += 1
        self._open[domain] = _Open(self._next_id, end)
        event: dict[str, Any] = {
            "kind": "cooldown_started",
            "t_ns": t_ns,
            "cooldown_id": self._next_id,
            "domain": domain,
            "cause": "rate_limited",
            "duration_s": round(remaining_s, 6),
        }
        if cause is not None:
            event["request_id"], event["attempt"] = cause
        out.append(event)

    def due(self, out: list[dict[str, Any]], t_ns: int) -> None:
        """Finishes every cooldown whose end is at or before ``t_ns``."""
        for domain in [d for d, c in self._open.items() if c.end_ns <= t_ns]:
            self._finish(out, domain, self._open[domain].end_ns)

    def close_all(self, out: list[dict[str, Any]], t_ns: int) -> None:
        """At the end of a run: cooldowns still running end now (the run is over)."""
        for domain in list(self._open):
            self._finish(out, domain, min(t_ns, self._open[domain].end_ns))

    def active(self, domain: str) -> bool:
        return domain in self._open

    def _finish(self, out: list[dict[str, Any]], domain: str, t_ns: int) -> None:
        current = self._open.pop(domain)
        out.append(
            {
                "kind": "cooldown_finished",
                "t_ns": t_ns,
                "cooldown_id": current.cooldown_id,
                "domain": domain,
            }
        )
