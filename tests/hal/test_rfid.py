"""The RC522 reader driver on an emulated chip, through gpiozero MockFactory pins.

The chip (hal.emulated.rc522) sits behind the pin factory's SPI port and RST
pin, as it does behind lgpio's on a Pi; everything above -- register access,
the timer-bounded transceive, the health check and the cascade anticollision
-- is the code that runs on a charger.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import logging
import sys
import threading
from collections.abc import Callable

import pytest
from gpiozero.pins.mock import MockFactory

from hal.config import ReaderConfig
from hal.emulated import rc522 as emu
from hal.interfaces import Fault, RfidReader
from hal.pi.mfrc522 import TIMER_S, ChipTimeout, Mfrc522, NoAnswer
from hal.pi.rfid import Rc522Reader, crc_a

CFG = ReaderConfig(spi_bus=0, spi_device=0, rst_pin=25, poll_interval_s=0.01)
UID4 = "DEADBEEF"
UID7 = "04A1B2C3D4E5F6"
UID10 = "0811223344556677889A"


class _NoRpiGpio(importlib.abc.MetaPathFinder):
    """An import of RPi.GPIO (or spidev, or the mfrc522 package) fails the test."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("RPi", "spidev", "mfrc522"):
            self.tried.append(name)
            raise ImportError(f"{name} must not be imported on the Pi path")
        return None


@pytest.fixture
def pi():
    """An RC522 on SPI0 CE0 with NRSTPD on BCM 25 of a MockFactory; RPi.GPIO unimportable."""
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] == "RPi"}
    guard = _NoRpiGpio()
    sys.meta_path.insert(0, guard)
    factory = MockFactory()
    chip = emu.Rc522()
    emu.attach(factory, chip, rst_pin=CFG.rst_pin)
    yield chip, factory
    factory.close()
    sys.meta_path.remove(guard)
    assert guard.tried == [], f"the reader tried to import {guard.tried}"
    assert not any(n.split(".")[0] == "RPi" for n in sys.modules)
    sys.modules.update(saved)


@pytest.fixture
async def reader(pi):
    r = Rc522Reader(CFG, pin_factory=pi[1], health_interval_s=0.05)
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
        ReaderConfig(spi_bus=0, spi_device=0, rst_pin=25, poll_interval_s=0.01, id_tag_format=fmt),
        pin_factory=pi[1],
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
    reader = Rc522Reader(CFG, pin_factory=pi[1], absent_polls=1)
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
    reader = Rc522Reader(CFG, pin_factory=pi[1], absent_polls=10)
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
    reader = Rc522Reader(CFG, pin_factory=pi[1], health_interval_s=0.05)
    await reader.start()
    try:
        assert reader.faults() == {Fault.READER_FAILURE}
        chip.revive()
        await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
        chip.place(emu.Card(UID7))
        assert await card(reader) == UID7
    finally:
        await reader.close()


async def test_close_stops_polling_and_powers_the_chip_down(pi):
    chip, factory = pi
    reader = Rc522Reader(CFG, pin_factory=factory)
    await reader.start()
    await polls(chip, 2)
    assert chip.antenna_on
    assert factory.pin(CFG.rst_pin).state == 1  # RST driven high by the pin factory
    await reader.close()

    assert not any(t.name == "rc522-poll" for t in threading.enumerate())
    assert not chip.antenna_on
    assert factory.pin(CFG.rst_pin).function == "input", "RST released"
    again = Rc522Reader(CFG, pin_factory=factory)  # pins and port free again
    await again.start()
    await again.close()


# --- the Pi path imports no RPi.GPIO ---------------------------------------------------


async def test_the_reader_works_without_rpi_gpio_and_never_imports_it(pi, reader):
    # The fixture makes RPi.GPIO, spidev and mfrc522 unimportable and checks after
    # the test that none was tried: RST and SPI come from the pin factory.
    chip, factory = pi
    assert "RPi" not in sys.modules and "RPi.GPIO" not in sys.modules
    chip.place(emu.Card(UID4))
    assert await card(reader) == UID4
    assert factory.pin(CFG.rst_pin).function == "output"


# --- a transceive with a real timeout ----------------------------------------------------


class FakeTime:
    """One clock for the chip and the driver; the driver's sleeps move it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _chip_on_fake_time() -> tuple[emu.Rc522, Mfrc522, FakeTime]:
    t = FakeTime()
    chip = emu.Rc522(clock=t)
    chip.set_reset_pin(True)
    driver = Mfrc522(emu.Rc522Port(chip), clock=t, sleep=t.sleep)
    driver.init()
    return chip, driver, t


def test_an_empty_poll_costs_a_few_transfers_and_ends_on_the_chips_timer():
    chip, driver, t = _chip_on_fake_time()
    assert chip.timer_s() == pytest.approx(TIMER_S) and TIMER_S == pytest.approx(5.0e-3, rel=0.01)
    before, started = chip.transfers, t()
    with pytest.raises(NoAnswer):
        driver.transceive([0x52], last_bits=7)  # WUPA into an empty field
    cost = chip.transfers - before
    print(f"empty poll: {cost} SPI transfers, {1000 * (t() - started):.1f} ms")
    assert cost <= 20, "mfrc522's loop took ~2,000"
    assert TIMER_S <= t() - started <= TIMER_S + 0.002  # the timer ended it, at 1 ms polling


def test_an_answer_is_taken_as_soon_as_the_chip_flags_it():
    chip, driver, _t = _chip_on_fake_time()
    chip.place(emu.Card(UID4))
    before = chip.transfers
    atqa, bits = driver.transceive([0x52], last_bits=7)
    assert atqa == emu.Card(UID4).atqa and bits == 0
    assert chip.transfers - before <= 15


def test_without_a_running_timer_the_wall_clock_deadline_ends_the_wait():
    chip, driver, t = _chip_on_fake_time()
    chip.brownout()  # TAuto back to 0: the chip's timer never starts
    before, started = chip.transfers, t()
    with pytest.raises(ChipTimeout, match="timer"):
        driver.transceive([0x52], last_bits=7)
    assert t() - started == pytest.approx(0.03, abs=0.002)
    assert chip.transfers - before <= 45  # bounded by the deadline / poll interval
    assert driver.mismatches(), "the health check sees what the brown-out did"
    driver.init()
    assert driver.mismatches() == []


# --- health: brown-out, re-initialisation, a reader that stays dead ----------------------


async def test_a_brownout_is_found_and_the_reader_set_up_again(pi, reader, caplog):
    chip, _ = pi
    caplog.set_level(logging.WARNING, logger="hal.pi.rfid")
    chip.place(a := emu.Card(UID4))
    assert await card(reader) == UID4
    chip.remove(a)
    inits = reader.inits
    chip.brownout()  # antenna off, timer stopped, VersionReg still fine
    assert not chip.antenna_on
    await eventually(lambda: chip.antenna_on and reader.inits > inits, "re-initialised")
    assert reader.faults() == frozenset(), "a recovered brown-out is no standing fault"
    assert any("lost its configuration" in r.getMessage() for r in caplog.records)
    chip.place(emu.Card(UID7))
    assert await card(reader) == UID7


class _DeafChip(emu.Rc522):
    """A chip whose antenna drivers no longer switch on (a damaged module)."""

    broken = False

    def _write(self, reg: int, value: int) -> None:
        if self.broken and reg == emu.TX_CONTROL:
            value &= ~0x03
        super()._write(reg, value)


async def test_a_chip_that_cannot_be_set_up_again_is_a_fault_until_it_can():
    factory = MockFactory()
    chip = _DeafChip()
    emu.attach(factory, chip, rst_pin=CFG.rst_pin)
    reader = Rc522Reader(CFG, pin_factory=factory, health_interval_s=0.05, reinit_attempts=3)
    await reader.start()
    try:
        chip.broken = True
        chip.brownout()
        await eventually(lambda: reader.faults() == {Fault.READER_FAILURE}, "fault raised")
        assert reader.inits >= 1 + 3
        chip.broken = False
        await eventually(lambda: reader.faults() == frozenset(), "fault cleared")
        chip.place(emu.Card(UID10))
        assert await card(reader) == UID10
    finally:
        await reader.close()
        factory.close()


async def test_start_initialises_the_chip_once_through_its_rst_line(pi, reader):
    chip, factory = pi
    assert reader.inits == 1
    # Held low (hard power-down) from the moment the line is claimed, then released once.
    assert [s.state for s in factory.pin(CFG.rst_pin).states] == [False, True]
    assert chip.antenna_on and chip.timer_s() == pytest.approx(TIMER_S)
