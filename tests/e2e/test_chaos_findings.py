"""Regression tests for daemon bugs that the chaos runner and the protocol fuzzer found."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

CARD = "0A1B2C3D"


async def test_an_ev_error_suspends_the_transaction_rather_than_ending_it(rig, csms):
    """Pilot state E is an EV fault with the cable in: SuspendedEV, not EVDisconnected."""
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("StartTransaction")

    await rig.fault("ev_error", True, connector=1)
    c = await rig.wait_connector(1, "SuspendedEV")
    assert c["contactor_closed"] is False
    assert c["error_code"] == "EVCommunicationError"
    assert c["transaction_local_id"] is not None

    def ev_error_notified(r):
        return r.payload["connectorId"] == 1 and r.payload["errorCode"] == "EVCommunicationError"

    await csms.wait_for("StatusNotification", ev_error_notified)

    await rig.fault("ev_error", False, connector=1)
    await rig.wait_connector(1, "Charging")
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
