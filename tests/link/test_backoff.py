import random

import pytest

from chargerd.link.backoff import reconnect_delay


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (0, 0.5, 1.0),  # first retry: about base
        (1, 1.0, 2.0),
        (2, 2.0, 4.0),
        (5, 16.0, 32.0),
        (6, 30.0, 60.0),  # capped from here on
        (7, 30.0, 60.0),
        (10_000, 30.0, 60.0),  # no overflow however long the outage
    ],
)
def test_equal_jitter_stays_within_half_to_full_delay(attempt, low, high):
    rng = random.Random(42)
    delays = [reconnect_delay(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 4  # actually jittered


@pytest.mark.parametrize(("attempt", "high"), [(0, 1.0), (3, 8.0), (50, 60.0)])
def test_full_jitter_spreads_from_zero(attempt, high):
    rng = random.Random(7)
    delays = [
        reconnect_delay(attempt, base=1.0, cap=60.0, rng=rng, jitter="full") for _ in range(200)
    ]
    assert all(0.0 <= d <= high for d in delays)
    assert min(delays) < high / 4


def test_same_seed_same_schedule():
    a = [reconnect_delay(i, base=1, cap=60, rng=random.Random(3)) for i in range(8)]
    b = [reconnect_delay(i, base=1, cap=60, rng=random.Random(3)) for i in range(8)]
    assert a == b


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter"),
    [(-1, 1.0, 60.0, "equal"), (0, 0.0, 60.0, "equal"), (0, 5.0, 1.0, "equal"), (0, 1, 2, "x")],
)
def test_nonsense_is_refused(attempt, base, cap, jitter):
    with pytest.raises(ValueError):
        reconnect_delay(attempt, base=base, cap=cap, rng=random.Random(), jitter=jitter)
