"""End-to-end fixtures: a real BenchCsms on 127.0.0.1 and the real daemon process."""

from __future__ import annotations

import pytest

from chargerd.bench.csms.csms import BenchCsms
from chargerd.bench.rig import StationRig

pytestmark = pytest.mark.e2e


@pytest.fixture
async def csms():
    server = BenchCsms()
    await server.start("127.0.0.1", 0)
    server.cards["0A1B2C3D"] = {"status": "Accepted"}
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_rig(tmp_path, csms):
    """make_rig(**kw) -> a started StationRig against the ``csms`` fixture."""
    rigs: list[StationRig] = []

    async def make(start: bool = True, **kw) -> StationRig:
        rig = StationRig(tmp_path / f"station{len(rigs)}", csms_url=csms.url, **kw)
        rigs.append(rig)
        if start:
            await rig.start()
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            await rig.stop()
            if rig.proc is not None and rig.proc.returncode not in (0, -9, None):
                print(rig.tail_log())


@pytest.fixture
async def rig(make_rig):
    """A started station, registered with the CSMS (a card before that would be offline)."""
    station = await make_rig()
    await station.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    return station


# -- OCA-style helpers: a registered station, a running charging session ------------------


@pytest.fixture
def make_registered_rig(make_rig):
    """make_registered_rig(**kw) -> a started StationRig whose boot the CSMS has accepted.

    A card presented before the registration is judged by the offline rules, so
    tests that start sessions wait for it first.
    """

    async def make(**kw) -> StationRig:
        station = await make_rig(**kw)
        await station.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )
        return station

    return make


@pytest.fixture
def start_charging(csms):
    """start_charging(rig, card=..., connector=1) -> the StartTransaction record.

    The driver's way in: plug, card, the EV asks for energy; returns once the
    station charges and knows the CSMS's transactionId.
    """

    async def start(rig: StationRig, card: str = "0A1B2C3D", connector: int = 1):
        def mine(r) -> bool:
            return r.cp_id == rig.charge_point_id and r.payload.get("connectorId") == connector

        before = len([r for r in csms.received if r.action == "StartTransaction" and mine(r)])
        await rig.plug(connector)
        await rig.wait_connector(connector, "Preparing")
        await rig.card(card)
        await rig.charge(connector)
        starts = await csms.wait_for("StartTransaction", predicate=mine, count=before + 1)
        await rig.wait_status(
            lambda s: (
                s["connectors"][connector - 1]["status"] == "Charging"
                and s["connectors"][connector - 1]["transaction_id"] is not None
            ),
            what=f"connector {connector} charging with a transactionId",
        )
        return starts[before]

    return start


# -- "nothing is ever lost": what the CSMS received of the transaction messages -----------

TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
ENERGY = "Energy.Active.Import.Register"


def energy_values(meter_values_payload: dict) -> list[float]:
    """The energy register readings in a MeterValues / transactionData list, in order."""
    items = meter_values_payload
    if isinstance(items, dict):
        items = items.get("meterValue") or items.get("transactionData") or []
    return [
        float(v["value"])
        for mv in items
        for v in mv["sampledValue"]
        if v.get("measurand", ENERGY) == ENERGY
    ]


class TxAudit:
    """The transaction messages one station sent, joined with what the CSMS answered.

    "Delivered" means answered with a CALLRESULT: that is the design's promise
    (exactly once per accepted CALLRESULT, in order).  A CALL the CSMS received
    but did not answer, or answered with a CALLERROR, is an attempt, not a delivery.
    """

    def __init__(self, servers, cp_id: str = "CP-TEST") -> None:
        """``servers``: one BenchCsms, or several in the order the station met them."""
        import json

        if not isinstance(servers, list | tuple):
            servers = [servers]
        self.cp_id = cp_id
        self.answers: dict[str, tuple[list, object]] = {}
        frames = [f for server in servers for f in list(server.frames)]
        for f in frames:
            if f.cp_id != cp_id or f.direction != "out":
                continue
            try:
                msg = json.loads(f.frame)
            except ValueError:
                continue
            if isinstance(msg, list) and msg and msg[0] in (3, 4):
                self.answers.setdefault(msg[1], (msg, f.time))
        self.attempts = [
            r
            for server in servers
            for r in server.received
            if r.cp_id == cp_id and r.action in TX_ACTIONS
        ]

    def answer(self, record) -> list | None:
        got = self.answers.get(record.unique_id)
        return got[0] if got else None

    def answered_at(self, record):
        got = self.answers.get(record.unique_id)
        return got[1] if got else None

    def accepted(self, record) -> bool:
        """Answered with a CALLRESULT the station can apply (a StartTransaction.conf
        without a transactionId fails validation: an attempt, not a delivery)."""
        answer = self.answer(record)
        if answer is None or answer[0] != 3:
            return False
        if record.action == "StartTransaction":
            return isinstance(answer[2], dict) and "transactionId" in answer[2]
        return True

    @property
    def delivered(self) -> list:
        return [r for r in self.attempts if self.accepted(r)]

    def of(self, action: str) -> list:
        return [r for r in self.delivered if r.action == action]

    def assigned_id(self, start_record) -> int:
        return int(self.answer(start_record)[2]["transactionId"])

    @staticmethod
    def identity(record) -> tuple[str, str]:
        """What makes two sends the same message: everything but the transactionId.

        (A StartTransaction re-sent after a lost answer gets a new id from the
        CSMS, and the messages after it carry that one.)
        """
        import json

        payload = {k: v for k, v in record.payload.items() if k != "transactionId"}
        return record.action, json.dumps(payload, sort_keys=True)

    def duplicates(self) -> list[list]:
        """Groups of delivered records that are the same message delivered more than once."""
        groups: dict[tuple[str, str], list] = {}
        for r in self.delivered:
            groups.setdefault(self.identity(r), []).append(r)
        return [g for g in groups.values() if len(g) > 1]

    def check(self, *, allow_duplicate_of=None) -> dict[int, list]:
        """Assert the invariants; returns {transactionId: its delivered messages, in order}.

        - each message delivered once (``allow_duplicate_of(first_record)`` may
          excuse a duplicate: the answer lost in a power cut),
        - MeterValues / StopTransaction carry an id the CSMS assigned, after its Start,
        - one StopTransaction for every StartTransaction, last,
        - energy never goes backwards within a transaction.
        """
        import itertools

        for group in self.duplicates():
            excused = allow_duplicate_of is not None and allow_duplicate_of(group[0])
            assert excused and len(group) == 2, (
                f"delivered {len(group)} times: {group[0].action} {group[0].payload}"
            )
        by_tx: dict[int, list] = {}
        for r in self.delivered:
            if r.action == "StartTransaction":
                tx_id = self.assigned_id(r)
                assert tx_id not in by_tx, f"the CSMS assigned {tx_id} twice?"
                by_tx[tx_id] = [r]
                continue
            tx_id = r.payload.get("transactionId")
            if r.action == "MeterValues" and tx_id is None:
                continue  # a live clock-aligned value outside a transaction
            assert tx_id in by_tx, f"{r.action} with transactionId {tx_id} before/without its Start"
            assert by_tx[tx_id][-1].action != "StopTransaction", f"{r.action} after the Stop"
            by_tx[tx_id].append(r)
        for tx_id, msgs in by_tx.items():
            start = msgs[0]
            if allow_duplicate_of is not None and len(msgs) == 1:
                twins = [
                    g for g in self.duplicates() if g[0] is start and allow_duplicate_of(start)
                ]
                if twins:
                    continue  # the orphan of a StartTransaction whose answer was lost
            assert msgs[-1].action == "StopTransaction", f"transaction {tx_id} has no Stop"
            energies = [float(start.payload["meterStart"])]
            for m in msgs[1:-1]:
                energies += energy_values(m.payload)
            stop = msgs[-1].payload
            energies += energy_values(stop.get("transactionData") or [])
            energies.append(float(stop["meterStop"]))
            assert all(b >= a - 0.5 for a, b in itertools.pairwise(energies)), (
                f"energy went backwards in transaction {tx_id}: {energies}"
            )
        return by_tx


@pytest.fixture
def tx_audit(csms):
    """tx_audit(cp_id="CP-TEST", servers=None) -> a TxAudit of what was received so far.

    ``servers``: the CSMSs the station talked to, in order (default: the ``csms`` fixture).
    """

    def audit(cp_id: str = "CP-TEST", servers=None) -> TxAudit:
        return TxAudit(servers or [csms], cp_id)

    return audit
