"""The mock OpenAI-compatible endpoint: for the demo, the tests and the benchmarks.

:class:`MockBehavior` holds the knobs (latency, 429 patterns, capacity and cold start, 5xx,
hangs, chosen 4xx failures), :class:`MockServer` serves it in this process on a background
thread, :class:`MockServerProcess` in a child process. ``ddtrace mock-server`` is the CLI.
"""

from ddscope.mock.behavior import Decision, MockBehavior, MockState, MockStats
from ddscope.mock.process import MockServerProcess
from ddscope.mock.server import MockServer

__all__ = ["Decision", "MockBehavior", "MockServer", "MockServerProcess", "MockState", "MockStats"]
