"""Rows on their way to disk: row groups admitted and checkpointed in order, the row writers,
``--resume`` from what is on disk, and the split of row groups over shard workers."""
