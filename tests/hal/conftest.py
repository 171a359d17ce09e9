"""Shared fixtures of the hal tests."""

from __future__ import annotations

import pytest


class FakeMonotonic:
    """A monotonic clock that moves only when a test sets ``t``: physics without sleeping."""

    def __init__(self, t: float = 7.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def another_clock():
    """Make the clock of another process (its monotonic time starts elsewhere)."""
    return FakeMonotonic
