"""Task-level scheduling: cells as tasks, the fair ready queue, task leases, the dispatcher and its
workers, the main pass and salvage rounds, and why a run stops early.

The run loop that drives them is :func:`ddscope.engine.scheduler.run_pipeline`.
"""
