"""Security events: critical ones durable in the outbox, others live, all in the bounded log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from chargerd.features import security_events as sec
from chargerd.features.security_events import SecurityEvents, durable_sender
from chargerd.features.security_log import SecurityLog
from chargerd.link import CallErrorReceived, CallResultInvalid, CallTimeout, NotConnected
from chargerd.store import Store, StoreFullError


def outbox_rows(store: Store) -> list[tuple[str, dict]]:
    rows = store.query("SELECT action, payload FROM outbox ORDER BY seq")
    return [(r["action"], json.loads(r["payload"])) for r in rows]


@pytest.fixture
def seclog(tmp_path) -> SecurityLog:
    return SecurityLog(tmp_path / "security.log", max_bytes=2048, backups=2)


@pytest.fixture
def events(clock, seclog, store, outbox):
    live: list[tuple[str, dict]] = []
    ev = SecurityEvents(clock=clock, security_log=seclog)
    ev.bind(store=store, outbox=outbox, send_live=lambda a, p: live.append((a, p)))
    ev.live = live  # type: ignore[attr-defined]
    return ev


def test_a_critical_event_is_queued_durably_and_logged(events, store, seclog, clock):
    events.emit(sec.STARTUP_OF_THE_DEVICE, "chargerd 1.0 started")
    assert outbox_rows(store) == [
        (
            "SecurityEventNotification",
            {
                "type": "StartupOfTheDevice",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "techInfo": "chargerd 1.0 started",
            },
        )
    ]
    assert events.live == []
    assert [e["type"] for e in seclog.entries()] == ["StartupOfTheDevice"]


def test_a_non_critical_event_goes_live_and_is_logged(events, store, seclog):
    events.emit(sec.INVALID_MESSAGES, "FormationViolation: not JSON")
    assert outbox_rows(store) == []
    assert [(a, p["type"]) for a, p in events.live] == [
        ("SecurityEventNotification", "InvalidMessages")
    ]
    assert seclog.entries()[0]["techInfo"] == "FormationViolation: not JSON"


def test_the_whitepaper_critical_set():
    assert sec.CRITICAL == {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "MemoryExhaustion",
        "TamperDetectionActivated",
    }
    assert len(sec.KNOWN) == 18


def test_tech_info_is_cut_to_the_schema_length(events, store):
    events.emit(sec.RESET_OR_REBOOT, "x" * 1000)
    ((_, payload),) = outbox_rows(store)
    assert len(payload["techInfo"]) == 255


def test_events_before_bind_wait_and_go_out_in_order(clock, seclog, store, outbox):
    ev = SecurityEvents(clock=clock, security_log=seclog)
    ev.emit(sec.STARTUP_OF_THE_DEVICE, "one")
    clock.advance(1)
    ev.emit(sec.SETTING_SYSTEM_TIME, "two")
    assert outbox_rows(store) == []
    ev.bind(store=store, outbox=outbox, send_live=lambda a, p: None)
    assert [p["techInfo"] for _, p in outbox_rows(store)] == ["one", "two"]


def test_emit_never_raises_when_the_store_and_the_log_fail(clock, tmp_path, store, outbox):
    (tmp_path / "file").write_text("")
    broken_log = SecurityLog(tmp_path / "file" / "security.log", max_bytes=1024)  # unwritable
    live: list[tuple[str, dict]] = []
    ev = SecurityEvents(clock=clock, security_log=broken_log)
    ev.bind(store=store, outbox=outbox, send_live=lambda a, p: live.append((a, p)))
    store.close()
    ev.emit(sec.TAMPER_DETECTION_ACTIVATED, "lid opened")
    assert broken_log.write_failures == 1
    # The store refused: the CSMS still hears it live, and it waits to be queued again.
    assert [p["type"] for _, p in live] == ["TamperDetectionActivated"]
    assert ev._pending and ev._pending[0]["type"] == "TamperDetectionActivated"


def test_a_refused_critical_event_is_queued_once_the_store_accepts(clock, seclog, store, outbox):
    class Flaky:
        fail = True

        def enqueue(self, action, payload):
            if self.fail:
                raise StoreFullError("database or disk is full")
            return outbox.enqueue(action, payload)

    flaky = Flaky()
    ev = SecurityEvents(clock=clock, security_log=seclog)
    ev.bind(store=store, outbox=flaky, send_live=lambda a, p: None)
    ev.emit(sec.FIRMWARE_UPDATED, "1.2.3")
    assert outbox_rows(store) == []
    flaky.fail = False
    ev.retry_pending()
    assert [p["type"] for _, p in outbox_rows(store)] == ["FirmwareUpdated"]
    assert ev._pending == []


async def test_a_full_disk_raises_memory_exhaustion_once(clock, seclog, tmp_path):
    store = Store.open(tmp_path / "tiny.db")
    live: list[tuple[str, dict]] = []
    ev = SecurityEvents(clock=clock, security_log=seclog)

    class NoOutbox:
        def enqueue(self, action, payload):
            raise StoreFullError("database or disk is full")

    ev.bind(store=store, outbox=NoOutbox(), send_live=lambda a, p: live.append((a, p)))
    store.full_listeners.append(
        lambda exc: ev.emit_soon(sec.MEMORY_EXHAUSTION, f"disk full: {exc}")
    )
    with store.transaction():
        store.execute("CREATE TABLE filler(x BLOB)")
    pages = store.query_one("PRAGMA page_count")[0]
    store.execute(f"PRAGMA max_page_count = {pages + 2}")
    for _ in range(3):  # every write fails; the CSMS hears it once
        with pytest.raises(StoreFullError):
            with store.transaction():
                store.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    await asyncio.sleep(0)
    assert [p["type"] for _, p in live] == ["MemoryExhaustion"]
    assert "disk full" in live[0][1]["techInfo"]
    assert [e["type"] for e in seclog.entries()] == ["MemoryExhaustion"]
    store.close()


async def test_critical_events_reach_the_csms_in_order_after_an_outage(
    clock, seclog, store, outbox, link
):
    ev = SecurityEvents(clock=clock, security_log=seclog)
    ev.bind(store=store, outbox=outbox, send_live=lambda a, p: None)
    for i, kind in enumerate([sec.STARTUP_OF_THE_DEVICE, sec.SETTING_SYSTEM_TIME]):
        ev.emit(kind, f"#{i}")
        clock.advance(1)
    link.answer("SecurityEventNotification", NotConnected("down"), {}, {})
    ready = asyncio.Event()
    ready.set()

    async def is_ready():
        await ready.wait()

    task = asyncio.create_task(
        outbox.run(
            link.call,
            is_ready,
            errors=(CallErrorReceived, CallResultInvalid),
            offline_errors=(NotConnected, CallTimeout),
        )
    )
    try:
        await link.wait_calls(3, "SecurityEventNotification", timeout=5)
        for _ in range(50):
            if not outbox_rows(store):
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    sent = [p["techInfo"] for _, p in link.sent("SecurityEventNotification")]
    assert sent == ["#0", "#0", "#1"]  # the first try met the outage, then in order
    assert outbox_rows(store) == []


def test_durable_sender_falls_back_to_live(store, outbox):
    live: list[tuple[str, dict]] = []
    send = durable_sender(store, outbox, lambda a, p: live.append((a, p)))
    send("DiagnosticsStatusNotification", {"status": "Uploading"})
    assert outbox_rows(store) == [("DiagnosticsStatusNotification", {"status": "Uploading"})]
    store.close()
    send("DiagnosticsStatusNotification", {"status": "Uploaded"})
    assert live == [("DiagnosticsStatusNotification", {"status": "Uploaded"})]


# -- the security log -------------------------------------------------------------------


def test_the_security_log_stays_bounded_and_keeps_the_newest(seclog, clock):
    for i in range(500):
        assert seclog.append(clock.now(), "InvalidMessages", f"frame {i}")
        clock.advance(1)
    files = seclog.files()
    assert len(files) == 3  # security.log + 2 backups
    assert all(p.stat().st_size <= 2048 for p in files)
    assert seclog.size() <= 3 * 2048
    entries = seclog.entries()
    assert entries[-1]["techInfo"] == "frame 499"
    numbers = [int(e["techInfo"].split()[1]) for e in entries]
    assert numbers == sorted(numbers)  # oldest first, across the rotated files
    assert (files[-1].stat().st_mode & 0o777) == 0o600


def test_the_security_log_window(seclog, clock):
    for i in range(5):
        seclog.append(clock.now(), "ResetOrReboot", str(i))
        clock.advance(60)
    from datetime import timedelta

    start = clock.now() - timedelta(seconds=250)
    stop = clock.now() - timedelta(seconds=110)
    assert [e["techInfo"] for e in seclog.entries(start, stop)] == ["1", "2", "3"]


def test_a_full_disk_loses_the_line_not_the_caller(clock):
    # /dev/full answers every write with ENOSPC, as a full SD card does.
    seclog = SecurityLog(Path("/dev/full"), max_bytes=1024)
    assert seclog.append(clock.now(), "MemoryExhaustion") is False
    assert seclog.append(clock.now(), "MemoryExhaustion") is False
    assert seclog.write_failures == 2


def test_the_security_log_refuses_silly_bounds(tmp_path):
    with pytest.raises(ValueError):
        SecurityLog(tmp_path / "s.log", max_bytes=10)
    with pytest.raises(ValueError):
        SecurityLog(tmp_path / "s.log", backups=0)
