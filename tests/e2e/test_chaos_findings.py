"""Regression tests for daemon bugs that the chaos runner and the protocol fuzzer found."""

from __future__ import annotations

import asyncio

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


@pytest.fixture
def tiny_state(tmp_path):
    """A station directory whose state lives on a 16 MiB tmpfs (root only)."""
    from chargerd.bench.chaoslib import tinydisk

    state = tmp_path / "station0" / "state"
    try:
        tinydisk.mount_tiny(state)
    except tinydisk.TinyDiskUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield state
    finally:
        tinydisk.unmount(state)


async def test_a_stop_the_full_disk_cannot_record_still_cuts_the_energy(tiny_state, make_rig, csms):
    """The driver's card stops the charge even when the stop cannot be written ahead."""
    from chargerd.bench.chaoslib import tinydisk

    rig = await make_rig(ocpp={"MeterValueSampleInterval": 1})
    assert rig.state_dir == tiny_state
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="boot")
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("StartTransaction")
    assert tinydisk.truncate_wal(tiny_state / "chargerd.db")
    tinydisk.fill(tiny_state)
    try:
        await asyncio.sleep(2.3)  # two MeterValues samples that cannot be written
        failures = rig.log_path.read_text().count("periodic task sampled meter values failed")
        assert failures == 1  # logged once, then quietly
        await rig.card(CARD)
        st = await rig.wait_status(
            lambda s: not s["connectors"][0]["contactor_closed"], what="contactor open"
        )
        c = st["connectors"][0]
        assert c["locked"] is False  # the driver can take the cable
        assert c["status"] != "Charging"
        assert "cannot record the stop" in rig.log_path.read_text()
    finally:
        tinydisk.free(tiny_state)
    (stop,) = await csms.wait_for("StopTransaction", timeout=10)
    assert stop.payload["reason"] == "Local"
    await rig.wait_status(
        lambda s: (
            s["connectors"][0]["transaction_local_id"] is None and s["ocpp"]["outbox_pending"] == 0
        ),
        what="stop recorded and delivered",
    )
    await rig.stop()
    assert tinydisk.integrity(tiny_state / "chargerd.db") == "ok"
