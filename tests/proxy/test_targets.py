"""Choosing among an upstream's targets and ejecting the failing ones, on a fake clock."""

from __future__ import annotations

import logging
from collections import Counter

import httpx
import pytest

from bizproxy import NoHealthyTarget
from bizproxy.errors import ConnectionFailure, UpstreamError
from bizproxy.targets import Balance, OutlierPolicy, Target, TargetSet


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def targets(
    *weights: int, outlier: OutlierPolicy | None = None, balance: Balance = "round-robin"
) -> tuple[TargetSet, Clock]:
    clock = Clock()
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    members = [
        (Target(f"http://127.0.0.1:{9000 + i}", transport=transport, clock=clock), weight, None)
        for i, weight in enumerate(weights)
    ]
    return TargetSet.of("orders", members, balance=balance, outlier=outlier), clock


REFUSED = ConnectionFailure("could not connect", upstream="orders", kind="connect-error")


def test_round_robin_gives_each_target_exactly_its_weight() -> None:
    """Over 600 picks, weights 1, 2 and 3 get exactly 100, 200 and 300."""
    chosen, _ = targets(1, 2, 3)
    counts = Counter(chosen.pick().label for _ in range(600))
    assert [counts[t.label] for t in chosen.targets] == [100, 200, 300]


def test_random_balance_follows_weights_within_tolerance() -> None:
    """Random picks with weights 1 and 3 send about three quarters to the second."""
    chosen, _ = targets(1, 3, balance="random")
    chosen.rng.seed(7)
    counts = Counter(chosen.pick().label for _ in range(2000))
    share = counts[chosen.targets[1].label] / 2000
    assert 0.70 < share < 0.80


def test_pick_avoids_the_target_that_just_failed() -> None:
    """A retry goes to another target whenever another one is available."""
    chosen, _ = targets(1, 1, 1)
    for _ in range(30):
        failed = chosen.pick()
        assert chosen.pick(avoid=failed) is not failed


def test_target_ejected_after_consecutive_failures_then_probed_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three failures in a row eject; after the cooldown one success brings it back."""
    policy = OutlierPolicy(failures=3, cooldown_seconds=10, max_cooldown_seconds=60)
    chosen, clock = targets(1, 1, outlier=policy)
    bad = chosen.targets[0]
    with caplog.at_level(logging.INFO, logger="bizproxy.health"):
        for _ in range(2):
            chosen.record(bad, success=False, failure=REFUSED)
        assert bad.state == "healthy"
        chosen.record(bad, success=False, failure=REFUSED)
        assert bad.state == "ejected"
        assert bad.last_ejection_reason == "3 failures in a row, last connect-error"
        assert all(chosen.pick() is not bad for _ in range(10))
        clock.now += 10
        assert bad.state == "probing"
        chosen.record(bad, success=True)
        assert bad.state == "healthy"
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == ["WARNING", "INFO"]
    assert "ejected target http://127.0.0.1:9000 for 10.0s" in levels[0][1]


def test_cooldown_doubles_on_repeated_ejection_up_to_its_cap() -> None:
    """Each failed probe ejects again for twice as long, never beyond max_cooldown."""
    policy = OutlierPolicy(failures=1, cooldown_seconds=10, max_cooldown_seconds=35)
    chosen, clock = targets(1, 1, outlier=policy)
    bad = chosen.targets[0]
    cooldowns = []
    for _ in range(4):
        chosen.record(bad, success=False, failure=REFUSED)
        cooldowns.append(bad.cooldown_left_seconds())
        clock.now += cooldowns[-1]
    assert cooldowns == [10, 20, 35, 35]


def test_at_most_the_configured_share_of_targets_is_ejected() -> None:
    """With max_ejected 50% of three targets, a second failing target stays in."""
    policy = OutlierPolicy(failures=1, max_ejected_share=0.5)
    chosen, _ = targets(1, 1, 1, outlier=policy)
    first, second, _third = chosen.targets
    chosen.record(first, success=False, failure=REFUSED)
    chosen.record(second, success=False, failure=UpstreamError("503", status=503))
    assert (first.state, second.state) == ("ejected", "healthy")


def test_every_target_ejected_raises_no_healthy_target_with_retry_after() -> None:
    """When all targets are out, pick refuses at once, saying when to come back."""
    policy = OutlierPolicy(failures=1, cooldown_seconds=7, max_ejected_share=1.0)
    chosen, _ = targets(1, 1, outlier=policy)
    for target in chosen.targets:
        chosen.record(target, success=False, failure=REFUSED)
    with pytest.raises(NoHealthyTarget) as caught:
        chosen.pick()
    assert caught.value.retry_after == 7
    assert "has no healthy target" in str(caught.value)


def test_success_between_failures_resets_the_streak() -> None:
    """Only failures in a row eject: a success in between starts the count again."""
    policy = OutlierPolicy(failures=2)
    chosen, _ = targets(1, 1, outlier=policy)
    target = chosen.targets[0]
    chosen.record(target, success=False, failure=REFUSED)
    chosen.record(target, success=True)
    chosen.record(target, success=False, failure=REFUSED)
    assert target.state == "healthy"
