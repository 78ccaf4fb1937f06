"""What a DataDesigner scheduler event file cannot tell, said once, with what it can.

Health shows these lines under the report (``record.warnings`` in the JSON), so a reader of a
DataDesigner run sees why there are no attempt figures and where the 429s went instead of a
silent zero.
"""

from __future__ import annotations

from pathlib import Path

from ddscope.integrations.datadesigner.translate import RunTranslator


def closing_notes(path: Path, translator: RunTranslator) -> list[str]:
    notes = [
        f"{path}: DataDesigner scheduler events have no per-request events (waits, attempts, "
        "429s, AIMD steps): attempt figures, utilization and idle attribution read 0 here; "
        "limit changes and cooldowns are as seen by its health snapshots"
    ]
    tally = translator.snapshots.tally
    for domain, figures in sorted(translator.snapshots.figures.items()):
        if figures.first_limit is None:
            continue
        outcomes = ", ".join(f"{k}×{n}" for k, n in sorted(tally.cumulative.items())) or "none"
        details = ", ".join(f"{k}×{n}" for k, n in sorted(tally.details.items()))
        notes.append(
            f"{path}: {domain}: model-task outcomes per DataDesigner's snapshots: {outcomes}"
            + (f" ({details})" if details else "")
            + f"; concurrency limit {figures.first_limit} → min {figures.min_limit} → last "
            f"{figures.last_limit}"
        )
    if translator.stats.unresolved_deferrals:
        notes.append(
            f"{path}: {translator.stats.unresolved_deferrals} deferrals had no snapshot after "
            "them to tell their error kind; given the most frequent kind"
        )
    return notes
