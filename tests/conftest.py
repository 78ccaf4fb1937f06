"""Fixtures shared by test modules: one in-process mock endpoint per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ddscope.mock import MockBehavior, MockServer


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as srv:
        yield srv


@pytest.fixture
def srv(server: MockServer) -> MockServer:
    server.reset(MockBehavior())
    return server
