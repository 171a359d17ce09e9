"""The chaos runner's invariants, judged on synthetic CSMS records (no daemon, no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chargerd.bench.chaoslib.invariants import check_session
from chargerd.bench.chaoslib.journal import Exchange
from chargerd.bench.chaoslib.records import (
    DiskFull,
    Event,
    FaultWindow,
    Kill,
    Knowledge,
    Sample,
    StationTx,
)

T0 = 1_800_000_000.0  # epoch seconds of the synthetic session


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Records:
    """Builds what a CSMS journal and a rig would hold, one message at a time."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.k = Knowledge(attempts=3)
        self.next_id = 1

    def send(
        self, action: str, payload: dict, *, t: float, answer: str = "result", conn: int = 1
    ) -> Exchange:
        ex = Exchange(len(self.exchanges), t, conn, action, payload, f"u{len(self.exchanges)}")
        if answer == "result":
            result: dict = {}
            if action == "StartTransaction":
                result = {"transactionId": self.next_id, "idTagInfo": {"status": "Accepted"}}
                self.next_id += 1
            ex.answer, ex.result, ex.answer_time = "result", result, t + 0.01
        elif answer == "error":
            ex.answer, ex.error_code, ex.answer_time = "error", "InternalError", t + 0.01
        self.exchanges.append(ex)
        return ex

    def start(self, t: float, *, connector: int = 1, meter: int = 100, **kw) -> dict:
        payload = {"connectorId": connector, "idTag": "0A1B2C3D", "meterStart": meter,
                   "timestamp": iso(t)}  # fmt: skip
        self.send("StartTransaction", payload, t=t, **kw)
        return payload

    def row(self, start: dict, *, local_id: int, tid: int | None, reason: str | None) -> None:
        self.k.station_txs.append(
            StationTx(
                local_id=local_id,
                connector_id=start["connectorId"],
                id_tag=start["idTag"],
                meter_start_wh=float(start["meterStart"]),
                start_time=start["timestamp"],
                state="stopped",
                transaction_id=tid,
                stop_reason=reason,
                meter_stop_wh=None,
            )
        )

    def meter(self, tid: int, wh: float, t: float, **kw) -> None:
        mv = {"timestamp": iso(t), "sampledValue": [{"value": f"{wh:.1f}", "unit": "Wh"}]}
        self.send("MeterValues", {"connectorId": 1, "transactionId": tid, "meterValue": [mv]},
                  t=t, **kw)  # fmt: skip

    def stop(
        self, tid: int, t: float, *, meter: int = 200, reason: str = "Local", ts=None, **kw
    ) -> None:
        stamp = iso(t if ts is None else ts)
        payload = {"transactionId": tid, "meterStop": meter, "timestamp": stamp, "reason": reason}
        self.send("StopTransaction", payload, t=t, **kw)

    def card(self, t: float) -> None:
        self.k.events.append(Event("card", None, t, t))

    def check(self) -> list[str]:
        return [v.rule for v in check_session(self.exchanges, self.k).violations]

    def counts(self):
        return check_session(self.exchanges, self.k).counts


def one_clean_transaction() -> Records:
    r = Records()
    r.card(T0 - 0.2)
    start = r.start(T0)
    r.meter(1, 150.0, T0 + 1)
    r.meter(1, 180.0, T0 + 2)
    r.card(T0 + 2.5)
    r.stop(1, T0 + 2.6)
    r.row(start, local_id=1, tid=1, reason="Local")
    return r


def test_a_clean_transaction_passes_and_is_counted():
    r = one_clean_transaction()
    assert r.check() == []
    counts = r.counts()
    assert counts["transactions"] == 1
    assert counts["energy readings checked"] == 2
    assert counts["messages checked"] == 4


def test_a_copy_on_a_new_connection_after_its_result_is_a_redelivery():
    r = one_clean_transaction()
    r.exchanges[-1].connection = 1
    r.stop(1, T0 + 2.6, conn=2)  # the same StopTransaction again, after a crash
    assert r.check() == []
    assert r.counts()["redelivered after a crash or cut"] == 1


def test_a_redelivered_start_orphans_one_csms_transaction_and_nothing_else():
    r = Records()
    r.card(T0 - 0.2)
    start = r.start(T0)  # the CSMS says 1; the station dies before it commits that
    r.start(T0, conn=2)  # re-sent after the restart: the CSMS now says 2
    r.stop(2, T0 + 3, reason="PowerLoss", conn=2, ts=T0 + 0.2)  # the last persisted reading
    r.k.kills.append(Kill(T0 + 0.5, T0 + 0.6, "start"))
    r.row(start, local_id=1, tid=2, reason="PowerLoss")
    assert r.check() == []
    assert r.counts()["CSMS transactions orphaned by a redelivered StartTransaction"] == 1


def test_resending_after_a_prompt_result_on_the_same_connection_is_a_bug():
    r = one_clean_transaction()
    r.stop(1, T0 + 2.6)
    assert r.check() == ["re-sent after its CALLRESULT"]


def test_a_message_never_accepted_is_lost():
    r = one_clean_transaction()
    r.exchanges[-1].answer, r.exchanges[-1].result = "none", None
    assert "never accepted" in r.check()


def test_a_message_refused_attempts_times_may_be_dropped():
    r = one_clean_transaction()
    last = r.exchanges.pop()
    for _ in range(3):
        r.send("StopTransaction", last.payload, t=last.time, answer="error")
    assert r.check() == []
    counts = r.counts()
    assert counts["dropped after TransactionMessageAttempts CALLERRORs"] == 1
    assert counts["retried after a CALLERROR"] == 2


def test_two_different_stops_for_one_transaction():
    r = one_clean_transaction()
    r.stop(1, T0 + 5, meter=210, reason="Local")
    assert "stopped twice" in r.check()


def test_meter_values_after_the_stop_and_energy_going_backwards():
    r = one_clean_transaction()
    r.meter(1, 170.0, T0 + 3)
    assert set(r.check()) == {"MeterValues after StopTransaction", "energy went backwards"}


def test_powerloss_needs_a_kill_and_a_kill_needs_powerloss():
    r = one_clean_transaction()
    r.k.kills.append(Kill(T0 + 1.2, T0 + 1.3, "charging"))
    assert "survived a kill" in r.check()

    r = Records()
    start = r.start(T0)
    r.stop(1, T0 + 1, reason="PowerLoss")
    r.row(start, local_id=1, tid=1, reason="PowerLoss")
    assert r.check() == ["PowerLoss without a power loss"]
    r.k.kills.append(Kill(T0 + 1.4, T0 + 1.5, "charging"))
    assert r.check() == []


def test_the_station_table_and_the_csms_must_agree():
    r = one_clean_transaction()
    r.row({"connectorId": 1, "idTag": "0A1B2C3D", "meterStart": 300, "timestamp": iso(T0 + 9)},
          local_id=2, tid=None, reason=None)  # fmt: skip
    assert r.check() == ["lost"]
    r = one_clean_transaction()
    r.k.station_txs.clear()
    assert r.check() == ["phantom"]


def test_a_stop_reason_the_rig_did_not_cause():
    r = one_clean_transaction()
    r.exchanges[-1].payload["reason"] = "EVDisconnected"
    r.k.station_txs[0] = StationTx(1, 1, "0A1B2C3D", 100.0, iso(T0), "stopped", 1,
                                   "EVDisconnected", 200.0)  # fmt: skip
    assert r.check() == ["unexplained stop reason"]
    r.k.events.append(Event("unplug", 1, T0 + 2.5, T0 + 2.5))
    assert r.check() == []


def test_transactions_on_one_connector_must_not_overlap():
    r = Records()
    r.card(T0)
    a = r.start(T0)
    b = r.start(T0 + 1, meter=200)
    r.stop(1, T0 + 2, meter=200)
    r.card(T0 + 3)
    r.stop(2, T0 + 3, meter=300)
    r.row(a, local_id=1, tid=1, reason="Local")
    r.row(b, local_id=2, tid=2, reason="Local")
    assert r.check() == ["transactions overlap"]


def test_a_message_naming_a_transaction_the_csms_never_gave():
    r = one_clean_transaction()
    r.meter(77, 190.0, T0 + 2.2)
    assert "message for an unknown transaction" in r.check()


@pytest.mark.parametrize(("faults", "closed", "ok"), [
    (["lock_failure"], True, False),
    (["ev_error"], True, False),
    (["meter_failure"], True, True),
    (["contactor_welded"], False, True),
])  # fmt: skip
def test_the_contactor_is_commanded_open_under_an_unsafe_fault(faults, closed, ok):
    r = Records()
    c = {"id": 1, "faults": faults, "contactor_closed": closed, "ev_state": "C"}
    r.k.samples.append(Sample(T0, {"connectors": [c], "faults": [], "ocpp": {}}))
    assert (r.check() == []) is ok


def test_a_fault_seen_while_online_must_reach_the_csms():
    r = Records()
    status = {
        "connectors": [{"id": 1, "faults": ["meter_failure"], "contactor_closed": True}],
        "faults": [{"connector": 1, "fault": "meter_failure"}],
        "ocpp": {"connected": True, "registration": "Accepted"},
    }
    r.k.samples.append(Sample(T0 + 0.1, status))
    r.k.faults.append(FaultWindow("meter_silent", 1, T0, T0 + 2, healthy=True))
    assert r.check() == ["fault not notified"]
    note = {"connectorId": 1, "status": "Charging", "errorCode": "PowerMeterFailure"}
    r.send("StatusNotification", note, t=T0 + 0.2)
    assert r.check() == []
    r.k.faults[0] = FaultWindow("meter_silent", 1, T0, T0 + 2, healthy=False)
    r.exchanges.clear()
    assert r.check() == []  # offline: the notification was not owed


def test_a_full_disk_must_refuse_loudly():
    r = Records()
    r.k.disk_full.append(DiskFull(T0, armed=True, refused_logged=True, started=False,
                                  daemon_alive=True))  # fmt: skip
    assert r.check() == []
    r.k.disk_full.append(DiskFull(T0, armed=True, refused_logged=False, started=True,
                                  daemon_alive=False))  # fmt: skip
    assert r.check() == ["died on a full disk", "started on a full disk"]


def test_a_full_disk_must_not_keep_a_charge_going():
    r = Records()
    r.k.disk_full.append(DiskFull(T0, True, False, False, True, kind="stop", energy_cut=True))
    assert r.check() == []
    assert r.counts()["charges stopped on a full disk"] == 1
    r.k.disk_full.append(DiskFull(T0, True, False, False, True, kind="stop", energy_cut=False))
    assert r.check() == ["kept charging on a full disk"]
