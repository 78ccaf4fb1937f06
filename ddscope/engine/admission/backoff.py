"""Backoff between in-pass retries of a broken (not a full) endpoint: exponential, full jitter.

A 5xx, a timeout, a connection error or a garbled body says the endpoint is broken or slow right
now. Retrying at once turns every such blip into a synchronized burst from every worker that saw
it; waiting ``uniform(0, min(cap, base · 2^(n−1)))`` before try n+1 ("full jitter", AWS
Architecture Blog, *Exponential Backoff And Jitter*) spreads the retries out and backs off
further the longer the trouble lasts. Pushback (a 429, a 503 with Retry-After) is not backed off
here: the domain's cooldown already paces it, for every worker at once.

Pure: the caller passes the random generator (seeded in tests) and sleeps on its clock.
"""

from __future__ import annotations

import random

# Attempt outcomes that are retried after a backoff (when they carry no Retry-After).
BACKOFF_KINDS: frozenset[str] = frozenset(
    {"server_error", "timeout", "connection_error", "bad_response"}
)


def backoff_ceiling_s(failures: int, base_s: float, max_s: float) -> float:
    """The cap on the pause after the ``failures``-th such failure in a row (1-based)."""
    exponent = min(max(failures, 1) - 1, 32)  # 2^32 × any base is past any sane cap
    return min(max_s, base_s * 2.0**exponent)


def full_jitter_s(failures: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """The pause before the next try: uniform in [0, :func:`backoff_ceiling_s`]."""
    return rng.uniform(0.0, backoff_ceiling_s(failures, base_s, max_s))
