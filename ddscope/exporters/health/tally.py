"""Run-level tallies of the health analyzer: drops, deferrals, salvage rounds, the engine's own
health events and the shutdown. Cold paths (a few events per row at most); bounded: a handful
of example rows per drop reason, one entry per salvage round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXAMPLE_ROWS = 5  # rows listed per drop reason


@dataclass
class RunTally:
    drops: dict[str, int] = field(default_factory=dict)  # by reason
    drop_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    deferred_by_kind: dict[str, int] = field(default_factory=dict)
    salvage: dict[int, dict[str, Any]] = field(default_factory=dict)  # by round
    health_count: int = 0
    latest_health: dict[str, Any] | None = None
    peaks: dict[str, int] = field(
        default_factory=lambda: {"queue_depth": 0, "leases": 0, "row_groups_in_flight": 0}
    )
    shutdown: dict[str, Any] | None = None  # the first shutdown event

    def salvage_started(self, data: dict[str, Any], t: int) -> None:
        self.salvage[data["round"]] = {"round": data["round"], "tasks": data["tasks"], "start": t}

    def salvage_finished(self, data: dict[str, Any], t: int) -> None:
        entry = self.salvage.setdefault(
            data["round"], {"round": data["round"], "tasks": 0, "start": t}
        )
        entry.update(end=t, recovered=data["recovered"], still_deferred=data["still_deferred"])

    def task_deferred(self, data: dict[str, Any], t: int) -> None:
        kind = data["error_kind"]
        self.deferred_by_kind[kind] = self.deferred_by_kind.get(kind, 0) + 1

    def row_dropped(self, data: dict[str, Any], t: int) -> None:
        reason = data["reason"]
        self.drops[reason] = self.drops.get(reason, 0) + 1
        example = self.drop_examples.get(reason)
        if example is None:
            self.drop_examples[reason] = {
                "rows": [data["row"]],
                "column": data.get("column"),
                "message": data["message"],
            }
        elif len(example["rows"]) < EXAMPLE_ROWS:
            example["rows"].append(data["row"])

    def health(self, data: dict[str, Any], t: int) -> None:
        self.health_count += 1
        self.latest_health = data
        peaks = self.peaks
        for key in peaks:
            value = data.get(key, 0)
            if value > peaks[key]:
                peaks[key] = value

    def shutdown_event(self, data: dict[str, Any], t: int) -> None:
        if self.shutdown is None:
            self.shutdown = data
