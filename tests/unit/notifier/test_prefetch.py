"""How far a dispatcher lane claims ahead: never so far that a claimed row's lease could end before it is sent; and no
channel whose one send could outlast the lease."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signoff.notifier.dispatcher import PREFETCH, Lane, prefetch_depth
from signoff.notifier.domain import Routing
from signoff.notifier.service import notifier_spec
from signoff.notifier.settings import NotifierSettings

LEASE = timedelta(minutes=2)  # SIGNOFF_DELIVERY_LEASE_SECONDS' default


def test_a_fast_channel_claims_the_full_prefetch() -> None:
    assert prefetch_depth(LEASE, 10.0) == PREFETCH  # the default channel timeout


@pytest.mark.parametrize(("timeout", "depth"), [(20.0, 5), (30.0, 3), (40.0, 2), (60.0, 1), (600.0, 1)])
def test_a_slow_channel_claims_only_what_it_can_send_within_the_lease(timeout: float, depth: int) -> None:
    assert prefetch_depth(LEASE, timeout) == depth


@pytest.mark.parametrize("timeout", [0.5, 5.0, 10.0, 15.0, 25.0, 39.0, 59.0])
def test_the_last_claimed_row_ends_a_timeout_before_its_lease_even_if_every_send_hangs(timeout: float) -> None:
    depth = prefetch_depth(LEASE, timeout)
    # the last row of a slot waits for depth - 1 sends, then takes its own: depth timeouts after the claim
    assert depth * timeout <= LEASE.total_seconds() - timeout


def test_a_lane_claims_up_to_its_depth_per_slot_and_again_once_half_is_used() -> None:
    lane = Lane(channel="ops", transport=None, concurrency=4, timeout=30.0, prefetch=3)  # type: ignore[arg-type]
    assert lane.room == 12 and lane.wants_claim
    lane.claimed.extend((None, 1) for _ in range(7))  # type: ignore[misc]
    assert lane.room == 5 and not lane.wants_claim
    lane.claimed.popleft()
    assert lane.room == 6 and lane.wants_claim


def test_a_channel_whose_timeout_reaches_the_lease_stops_the_role_at_start() -> None:
    routing = Routing.from_mapping(
        {
            "channels": [
                {"name": "fast", "type": "log"},
                {"name": "slow", "type": "log", "settings": {"timeout_seconds": 120}},
            ]
        },
        "routing.yaml",
    )
    settings = NotifierSettings(delivery_lease_seconds=LEASE.total_seconds())
    with pytest.raises(
        ValueError, match=r"channel 'slow': a send may take 120s, not less than the delivery lease of 120s"
    ):
        notifier_spec(settings, routing=routing)
    # Below the lease (and the default timeout, for the channel without one), the role starts.
    assert notifier_spec(NotifierSettings(delivery_lease_seconds=121), routing=routing).name == "notifier"
    with pytest.raises(ValueError, match="channel 'fast': a send may take 10s"):
        notifier_spec(
            NotifierSettings(delivery_lease_seconds=10),
            routing=Routing.from_mapping({"channels": [{"name": "fast", "type": "log"}]}, "routing.yaml"),
        )
