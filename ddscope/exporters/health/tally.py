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
    # by row group, then reason: what a resume takes back (the groups it generates again)
    drops_by_group: dict[int, dict[str, int]] = field(default_factory=dict)
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
        in_group = self.drops_by_group.setdefault(data["row_group"], {})
        in_group[reason] = in_group.get(reason, 0) + 1
        example = self.drop_examples.get(reason)
        if example is None:
            self.drop_examples[reason] = {
                "rows": [data["row"]],
                "groups": [data["row_group"]],
                "column": data.get("column"),
                "message": data["message"],
            }
        elif len(example["rows"]) < EXAMPLE_ROWS:
            example["rows"].append(data["row"])
            example["groups"].append(data["row_group"])

    def forget_drops_from(self, first_group: int) -> None:
        """A resume generates row groups ``first_group`` on again (a stop abandoned them, or a
        kill cut them off): their rows were not lost, so their drops no longer count."""
        for group in [g for g in self.drops_by_group if g >= first_group]:
            for reason, n in self.drops_by_group.pop(group).items():
                left = self.drops[reason] - n
                if left:
                    self.drops[reason] = left
                else:
                    del self.drops[reason]
        for reason in list(self.drop_examples):
            example = self.drop_examples[reason]
            pairs = zip(example["rows"], example["groups"], strict=True)
            kept = [(row, group) for row, group in pairs if group < first_group]
            if reason not in self.drops or not kept:
                # none left, or only rows not listed: the example's message may be about either
                del self.drop_examples[reason]
                continue
            example["rows"] = [r for r, _ in kept]
            example["groups"] = [g for _, g in kept]

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
