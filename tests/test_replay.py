"""The replay guard, sans-I/O: every clock reading is an argument."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterrpc.errors import ConfigurationError, ReplayError, StaleEpochError, TooOldError
from clusterrpc.replay import ReplayGuard

NOW = 1_800_000_000.0  # seconds since the Unix epoch
FRESH = int(NOW * 1000)  # a header timestamp (ms) equal to the receiver's clock


def test_in_order_then_duplicate() -> None:
    guard = ReplayGuard()
    for sequence in range(1, 50):
        guard.accept("n1", 1, sequence, FRESH, NOW)
    with pytest.raises(ReplayError):
        guard.accept("n1", 1, 49, FRESH, NOW)
    with pytest.raises(ReplayError):
        guard.accept("n1", 1, 1, FRESH, NOW)


def test_reordering_within_the_window_is_accepted_once() -> None:
    guard = ReplayGuard(window=64)
    guard.accept("n1", 1, 100, FRESH, NOW)
    for sequence in (99, 37, 80, 101, 98):
        guard.accept("n1", 1, sequence, FRESH, NOW)
    for sequence in (99, 37, 80, 101, 98, 100):
        with pytest.raises(ReplayError):
            guard.accept("n1", 1, sequence, FRESH, NOW)


def test_behind_the_window_is_too_old() -> None:
    guard = ReplayGuard(window=64)
    guard.accept("n1", 1, 100, FRESH, NOW)
    guard.accept("n1", 1, 37, FRESH, NOW)  # 63 behind: the window's last slot
    with pytest.raises(TooOldError):
        guard.accept("n1", 1, 36, FRESH, NOW)  # 64 behind
    assert issubclass(TooOldError, ReplayError)


def test_huge_jump_forgets_the_window_without_huge_integers() -> None:
    guard = ReplayGuard()
    guard.accept("n1", 1, 5, FRESH, NOW)
    guard.accept("n1", 1, 2**64 - 1, FRESH, NOW)
    with pytest.raises(TooOldError):
        guard.accept("n1", 1, 6, FRESH, NOW)
    guard.accept("n1", 1, 2**64 - 2, FRESH, NOW)


def test_epochs() -> None:
    guard = ReplayGuard()
    guard.accept("n1", 5, 1000, FRESH, NOW)
    with pytest.raises(StaleEpochError, match="older than its newest epoch"):
        guard.accept("n1", 4, 1001, FRESH, NOW)
    guard.accept("n1", 6, 1, FRESH, NOW)  # a restart: new epoch, sequence starts again
    guard.accept("n1", 6, 2, FRESH, NOW)
    with pytest.raises(StaleEpochError):
        guard.accept("n1", 5, 1001, FRESH, NOW)  # the old run is over for good


@pytest.mark.parametrize("skew", [-30.0, 30.0, 0.0])
def test_new_epoch_within_freshness(skew: float) -> None:
    ReplayGuard(freshness=30).accept("n1", 1, 1, int((NOW + skew) * 1000), NOW)


@pytest.mark.parametrize("skew", [-30.5, 31.0, -3600.0, 86400.0])
def test_new_epoch_with_stale_timestamp_is_refused(skew: float) -> None:
    guard = ReplayGuard(freshness=30)
    with pytest.raises(StaleEpochError, match="freshness window"):
        guard.accept("n1", 1, 1, int((NOW + skew) * 1000), NOW)
    assert len(guard) == 0  # a refusal changes nothing


def test_known_epoch_needs_no_fresh_timestamp() -> None:
    """Once an epoch is known, the window alone judges; a sender's clock may drift."""
    guard = ReplayGuard(freshness=30)
    guard.accept("n1", 1, 1, FRESH, NOW)
    guard.accept("n1", 1, 2, FRESH, NOW + 3600)


def test_senders_are_independent() -> None:
    guard = ReplayGuard()
    guard.accept("n1", 1, 7, FRESH, NOW)
    guard.accept("n2", 1, 7, FRESH, NOW)
    with pytest.raises(ReplayError):
        guard.accept("n2", 1, 7, FRESH, NOW)


def test_max_senders_forgets_the_least_recent() -> None:
    guard = ReplayGuard(max_senders=2)
    guard.accept("a", 1, 1, FRESH, NOW)
    guard.accept("b", 1, 1, FRESH, NOW)
    guard.accept("a", 1, 2, FRESH, NOW)  # a is now the most recent
    guard.accept("c", 1, 1, FRESH, NOW)  # evicts b
    assert len(guard) == 2
    guard.accept("b", 1, 1, FRESH, NOW)  # b is a new epoch again: its window was forgotten
    with pytest.raises(StaleEpochError):  # ... so only a fresh timestamp gets a forgotten one in
        guard.accept("a", 1, 3, FRESH - 3_600_000, NOW)


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 0}, {"window": 1.5}, {"window": 2**16 + 1}, {"freshness": 0}, {"freshness": -1},
     {"max_senders": 0}],
)
def test_bad_configuration(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        ReplayGuard(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(sequences=st.lists(st.integers(1, 3000), max_size=300), window=st.integers(1, 256))
def test_window_matches_a_reference_model(sequences: list[int], window: int) -> None:
    """Accepted exactly when never seen before and within `window` of the highest seen."""
    guard = ReplayGuard(window=window)
    seen: set[int] = set()
    top = 0
    for sequence in sequences:
        if not seen:
            expected = "ok"
        elif sequence in seen and top - sequence < window:
            expected = "replay"
        elif top - sequence >= window:
            expected = "old"
        else:
            expected = "ok"
        try:
            guard.accept("n", 1, sequence, FRESH, NOW)
            outcome = "ok"
        except TooOldError:
            outcome = "old"
        except ReplayError:
            outcome = "replay"
        assert outcome == expected, (sequence, top, sorted(seen))
        if outcome == "ok":
            seen.add(sequence)
            top = max(top, sequence)
