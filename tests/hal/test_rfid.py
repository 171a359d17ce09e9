"""The RC522 reader driver running the real mfrc522 library on an emulated chip.

Fake ``spidev`` and ``RPi.GPIO`` modules stand in for the Pi (the hardware
boundary); everything above them -- the mfrc522 library and our cascade
anticollision -- is the code that runs on a charger.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable

import pytest

from hal.config import ReaderConfig
from hal.emulated import rc522 as emu
from hal.errors import ReaderError
from hal.interfaces import Fault, RfidReader
from hal.pi.rfid import Rc522Reader, crc_a

CFG = ReaderConfig(spi_bus=0, spi_device=0, rst_pin=25, poll_interval_s=0.01)
UID4 = "DEADBEEF"
UID7 = "04A1B2C3D4E5F6"
UID10 = "0811223344556677889A"
_PI_MODULES = ("spidev", "RPi", "RPi.GPIO")


def _pi_module_names() -> list[str]:
    return [
        name
        for name in sys.modules
        if name in _PI_MODULES or name == "mfrc522" or name.startswith("mfrc522.")
    ]


@pytest.fixture
def pi():
    """An RC522 on SPI0 CE0 (RST on BCM 25) behind fake spidev / RPi.GPIO modules.

    mfrc522 binds spidev and RPi.GPIO when imported, so it is dropped from
    sys.modules before and after, and the driver imports it fresh against
    this test's chip.
    """
    chip = emu.Rc522()
    modules = emu.fake_modules(chip, rst_pin=CFG.rst_pin)
    saved = {name: sys.modules.pop(name) for name in _pi_module_names()}
    sys.modules.update(modules)
    yield chip, modules["RPi.GPIO"]
    for name in _pi_module_names():
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
async def reader(pi):
    r = Rc522Reader(CFG, health_interval_s=0.05)
    await r.start()
    yield r
    await r.close()


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate()`` holds (a generous bound, not a speed requirement)."""
    try:
        async with asyncio.timeout(5.0):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def polls(chip, n: int) -> None:
    """Let the driver poll the field ``n`` more times."""
    target = chip.wakeups + n
    await eventually(lambda: chip.wakeups >= target, f"{n} polls")


async def card(reader: Rc522Reader) -> str:
    async with asyncio.timeout(5.0):
        return await reader.next_card()


def test_crc_a_matches_iso_14443_examples():
    assert crc_a(b"\x50\x00") == bytes.fromhex("57CD")  # HLTA
    assert crc_a(b"\x30\x00") == bytes.fromhex("02A8")  # READ block 0


@pytest.mark.parametrize("uid", [UID4, UID7, UID10], ids=["4-byte", "7-byte", "10-byte"])
async def test_uid_of_every_length_is_read_whole(pi, reader, uid):
    chip, _ = pi
    assert isinstance(reader, RfidReader)
    chip.place(emu.Card(uid))
    assert await card(reader) == uid
    assert reader.faults() == frozenset()


@pytest.mark.parametrize(
    "fmt, expected",
    [("hex", UID7), ("hex_reversed", "F6E5D4C3B2A104"), ("decimal", "1303689068602870")],
)
async def test_the_uid_becomes_the_configured_id_tag_format(pi, fmt, expected):
    chip, _ = pi
    r = Rc522Reader(
        ReaderConfig(spi_bus=0, spi_device=0, rst_pin=25, poll_interval_s=0.01, id_tag_format=fmt)
    )
    await r.start()
    try:
        chip.place(emu.Card(UID7))
        assert await card(r) == expected
    finally:
        await r.close()


async def test_a_card_left_on_the_reader_yields_once(pi, reader):
    chip, _ = pi
    a, b = emu.Card(UID4), emu.Card(UID7)
    chip.place(a)
    assert await card(reader) == UID4
    await polls(chip, 10)  # A stays on the reader and keeps answering
    chip.remove(a)
    await polls(chip, 3)
    chip.place(b)
    assert await card(reader) == UID7, "A was yielded again while it lay on the reader"


async def test_a_card_lying_still_answers_every_poll(pi):
    # With no tolerance for a missed poll at all, a card lying still must still
    # be one presentation: it is woken and halted at every poll, never lost.
    chip, _ = pi
    reader = Rc522Reader(CFG, absent_polls=1)
    await reader.start()
    try:
        a = emu.Card(UID7)
        chip.place(a)
        assert await card(reader) == UID7
        await polls(chip, 10)
        chip.remove(a)
        await polls(chip, 1)
        chip.place(emu.Card(UID4))
        assert await card(reader) == UID4
    finally:
        await reader.close()


async def test_a_card_presented_again_yields_again(pi, reader):
    chip, _ = pi
    a = emu.Card(UID10)
    chip.place(a)
    assert await card(reader) == UID10
    chip.remove(a)
    await polls(chip, 3)
    chip.place(a)
    assert await card(reader) == UID10


async def test_a_card_flickering_at_the_edge_is_one_presentation(pi):
    chip, _ = pi
    reader = Rc522Reader(CFG, absent_polls=10)
    await reader.start()
    try:
        a, b = emu.Card(UID4), emu.Card(UID7)
        chip.place(a)
        assert await card(reader) == UID4
        chip.remove(a)
        await polls(chip, 1)  # missed one poll, well under absent_polls
        chip.place(a)
        await polls(chip, 3)
        chip.remove(a)
        await polls(chip, 10)
        chip.place(b)
        assert await card(reader) == UID7
    finally:
        await reader.close()


async def test_two_cards_at_once_give_no_bogus_uid(pi, reader):
    chip, _ = pi
    a, b = emu.Card("11223344"), emu.Card("55667788")
    chip.place(a, b)  # their UIDs collide on the air
    await polls(chip, 5)
    chip.remove(b)
    assert await card(reader) == "11223344"


async def test_dead_reader_is_a_fault_until_it_answers_again(pi, reader, caplog):
    chip, _ = pi
    caplog.set_level(logging.DEBUG, logger="hal.pi.rfid")
    waiting = asyncio.create_task(reader.next_card())

    chip.kill("silent")  # the module fell off the bus: every register reads 0x00
    await eventually(lambda: reader.faults() == {Fault.READER_FAILURE}, "fault raised")
    before = chip.transfers
    await eventually(lambda: chip.transfers > before + 10, "still polling")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "a fault is logged once, not at every poll"
    assert not waiting.done(), "next_card() keeps waiting while the reader is dead"

    chip.revive()  # comes back from power-on reset: antenna off until re-initialised
    await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
    assert any(r.levelno == logging.INFO and "again" in r.getMessage() for r in caplog.records)
    chip.place(emu.Card(UID7))
    async with asyncio.timeout(5.0):
        assert await waiting == UID7


async def test_spi_errors_are_a_fault_too(pi, reader):
    chip, _ = pi
    chip.kill("error")
    await eventually(lambda: reader.faults() == {Fault.READER_FAILURE}, "fault raised")
    chip.revive()
    await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
    chip.place(emu.Card(UID4))
    assert await card(reader) == UID4


async def test_card_lying_on_the_reader_through_an_outage_is_not_repeated(pi, reader):
    chip, _ = pi
    a = emu.Card(UID4)
    chip.place(a)
    assert await card(reader) == UID4
    await polls(chip, 5)  # it lies there a while
    chip.kill("silent")
    await eventually(lambda: reader.faults() == {Fault.READER_FAILURE}, "fault raised")
    chip.revive()
    await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
    await polls(chip, 5)
    chip.remove(a)
    await polls(chip, 3)
    chip.place(emu.Card(UID10))
    assert await card(reader) == UID10


async def test_reader_missing_at_start_is_a_fault_not_a_crash(pi):
    chip, _ = pi
    chip.kill("silent")
    reader = Rc522Reader(CFG, health_interval_s=0.05)
    await reader.start()
    try:
        assert reader.faults() == {Fault.READER_FAILURE}
        chip.revive()
        await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
        chip.place(emu.Card(UID7))
        assert await card(reader) == UID7
    finally:
        await reader.close()


async def test_close_stops_polling_and_releases_only_its_pin(pi):
    chip, gpio = pi
    reader = Rc522Reader(CFG)
    await reader.start()
    await polls(chip, 2)
    assert chip.antenna_on
    await reader.close()

    assert not any(t.name == "rc522-poll" for t in threading.enumerate())
    assert not chip.antenna_on
    assert gpio.cleaned == [CFG.rst_pin], "a global GPIO.cleanup() would free other lines"
    assert gpio.mode == gpio.BCM


async def test_without_the_pi_libraries_start_raises(monkeypatch):
    for name in _pi_module_names():
        monkeypatch.delitem(sys.modules, name)
    reader = Rc522Reader(CFG)
    with pytest.raises(ReaderError):
        await reader.start()
