"""RC522 (NXP MFRC522) card reader: SPI and RST through the station's gpiozero pin factory.

The chip is driven at register level by hal.pi.mfrc522 (not the ``mfrc522``
package, whose RPi.GPIO RST and busy-polling wait loop do not work under the
unit: see that module).  SPI is ``pin_factory.spi(port, device)`` (lgpio's
``spi_open`` on a Pi with the lgpio factory) and RST a gpiozero output on the
same factory, so nothing here imports ``RPi.GPIO`` or needs ``/dev/gpiomem``.

The chip is polled in a daemon thread that hands each UID to the event loop.
Cards with 4, 7 and 10 byte UIDs are read through the ISO/IEC 14443-3
cascade levels; CRC_A is computed here, not by the chip's coprocessor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hal.config import ReaderConfig
from hal.errors import ReaderError
from hal.idtag import uid_to_id_tag
from hal.interfaces import Fault
from hal.pi.mfrc522 import ChipTimeout, Mfrc522, NoAnswer, TransceiveError

__all__ = ["KNOWN_VERSIONS", "Rc522Reader", "crc_a"]

log = logging.getLogger(__name__)

# VersionReg answers of chips that work with this driver (0x00 / 0xFF: no chip on the bus).
KNOWN_VERSIONS = {
    0x91: "MFRC522 v1.0",
    0x92: "MFRC522 v2.0",
    0x88: "FM17522 (clone)",
    0xB2: "FM17522 (clone)",
    0x12: "MFRC522 (counterfeit)",
}
_SEL = (0x93, 0x95, 0x97)  # SEL of cascade levels 1, 2, 3
_CASCADE_TAG = 0x88
_SAK_UID_NOT_COMPLETE = 0x04
_WUPA = 0x52
_HLTA = 0x50


def crc_a(data: bytes | list[int]) -> bytes:
    """ISO/IEC 14443-3 CRC_A (initial 0x6363), low byte first as on the air."""
    crc = 0x6363
    for byte in data:
        b = (byte ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return bytes((crc & 0xFF, crc >> 8))


class _Unreadable(Exception):
    """A card answered the wake-up but its UID could not be read this time."""


class Rc522Reader:
    """An RfidReader on an RC522 module: each presentation of a card yields its UID once.

    A card counts as presented from the first poll that reads its UID until it
    has missed ``absent_polls`` polls in a row, so that a card lying on the
    reader, or one that flickers at the edge of the field, does not start and
    stop transactions over and over.

    Health, every ``health_interval_s`` and at once after a transceive whose
    timer never fired: VersionReg must name a known chip (a module that fell
    off the bus reads 0x00: Fault.READER_FAILURE at once), and the registers
    the reader depends on (antenna, timer, modulation; hal.pi.mfrc522.CONFIG)
    must read back what was written.  A brown-out resets them while VersionReg
    still reads fine, which would leave the reader deaf without a fault: the
    chip is then reset (RST pulse) and initialised again; when that fails
    ``reinit_attempts`` times in a row the reader is Fault.READER_FAILURE,
    until a check finds it answering and configured again.
    """

    def __init__(
        self,
        cfg: ReaderConfig,
        *,
        pin_factory: Any = None,
        absent_polls: int = 3,
        health_interval_s: float = 2.0,
        spi_speed_hz: int = 1_000_000,
        reinit_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._cfg = cfg
        self._factory = pin_factory
        self._absent_polls = max(1, absent_polls)
        self._health_interval_s = health_interval_s
        self._spi_speed_hz = spi_speed_hz
        self._reinit_attempts = max(1, reinit_attempts)
        self._clock = clock
        self._sleep = sleep
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rst: Any = None  # gpiozero DigitalOutputDevice on the RST (NRSTPD) line
        self._spi: Any = None  # the pin factory's SPI port
        self._chip: Mfrc522 | None = None
        self._failing = False
        self._needs_init = True
        self._bad_inits = 0
        self._next_health = 0.0
        self._card: str | None = None  # UID of the card on the reader
        self._absent = 0
        self.inits = 0  # initialisations done (start, recovery, brown-out)

    # -- RfidReader ------------------------------------------------------------
    async def next_card(self) -> str:
        """Wait for the next card; while the reader is dead this keeps waiting."""
        return await self._queue.get()

    def faults(self) -> frozenset[Fault]:
        return frozenset({Fault.READER_FAILURE}) if self._failing else frozenset()

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Open the reader and start polling.

        A reader that does not answer (or an SPI port that cannot be opened) is
        not an error here: it shows as Fault.READER_FAILURE and is retried,
        since the station can still charge with remote starts.
        """
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        await asyncio.to_thread(self._step, poll=False)
        self._thread = threading.Thread(target=self._run, name="rc522-poll", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop polling, switch the antenna off and release SPI and the RST pin."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
            if thread.is_alive():
                log.warning("RC522 poll thread did not stop; SPI left open")
                return
        self._release()

    async def __aenter__(self) -> Rc522Reader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- worker thread ---------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._cfg.poll_interval_s):
            self._step(poll=True)

    def _step(self, *, poll: bool) -> None:
        """One poll: open the device if needed, check its health, look for a card."""
        try:
            chip = self._open()
            now = self._clock()
            # While failing, the chip is retried once per health interval.
            if (self._needs_init and not self._failing) or now >= self._next_health:
                self._next_health = now + self._health_interval_s
                if not self._check_health(chip):
                    return
            if poll:
                self._track(self._read_uid(chip))
        except ChipTimeout as exc:
            # The timer did not run: the registers are probably gone (brown-out).
            log.warning("%s; checking the chip at the next poll", exc)
            self._next_health = 0.0
        except Exception as exc:  # any SPI or gpiozero failure is a reader failure
            self._fail(exc)

    def _open(self) -> Mfrc522:
        if self._chip is not None:
            return self._chip
        if self._rst is None:
            from gpiozero import DigitalOutputDevice

            # Low holds the chip in hard power-down until the first initialisation.
            self._rst = DigitalOutputDevice(
                self._cfg.rst_pin, initial_value=False, pin_factory=self._factory
            )
        if self._spi is None:
            self._spi = self._rst.pin_factory.spi(
                port=self._cfg.spi_bus, device=self._cfg.spi_device
            )
            with contextlib.suppress(Exception):  # not every port can change its clock
                self._spi.rate = self._spi_speed_hz
        self._chip = Mfrc522(self._spi, clock=self._clock, sleep=self._sleep)
        self._needs_init = True
        return self._chip

    def _initialise(self, chip: Mfrc522) -> None:
        """Hard reset through RST (the chip restarts from power-on), then configure."""
        self._rst.off()
        self._sleep(0.001)
        self._rst.on()
        self._sleep(0.05)  # oscillator start-up; the datasheet asks for > 37.74 us
        chip.init()
        self.inits += 1

    def _check_health(self, chip: Mfrc522) -> bool:
        """True when the chip answers and holds its configuration (re-initialised if not)."""
        version = chip.version()
        fresh = False
        if version not in KNOWN_VERSIONS and self._needs_init:
            # Held in power-down by RST, or just plugged back: reset it before judging.
            self._initialise(chip)
            fresh = True
            version = chip.version()
        if version not in KNOWN_VERSIONS:
            raise ReaderError(f"RC522 does not answer (VersionReg 0x{version:02X})")
        wrong = [] if self._needs_init else chip.mismatches()
        if self._needs_init or wrong:
            if wrong:
                log.warning(
                    "RC522 lost its configuration (a brown-out?): %s; re-initialising",
                    "; ".join(wrong),
                )
            if not fresh:
                self._initialise(chip)
            wrong = chip.mismatches()
            if wrong:
                self._needs_init = True
                self._bad_inits += 1
                self._next_health = 0.0  # try again at the next poll
                if self._bad_inits >= self._reinit_attempts:
                    raise ReaderError(
                        f"RC522 does not keep its configuration after {self._bad_inits} "
                        f"initialisations: {wrong[0]}"
                    )
                return False
            self._needs_init = False
        self._bad_inits = 0
        if self._failing:
            self._failing = False
            log.info("RC522 reader answers again (%s)", KNOWN_VERSIONS[version])
        return True

    def _fail(self, exc: Exception) -> None:
        self._needs_init = True  # it may lose power meanwhile: set it up afresh when back
        if not self._failing:
            self._failing = True
            log.error("RC522 reader failure: %s", exc)
        else:
            log.debug("RC522 reader still failing: %s", exc)

    def _track(self, uid: str | _Unreadable | None) -> None:
        """Debounce: one UID per presentation of a card."""
        if uid is None:
            self._absent += 1
            if self._absent >= self._absent_polls:
                self._card = None
            return
        self._absent = 0
        if isinstance(uid, _Unreadable) or uid == self._card:
            return
        self._card = uid
        log.debug("card %s presented", uid)
        try:
            id_tag = uid_to_id_tag(uid, self._cfg.id_tag_format)  # the one UID -> idTag place
        except ValueError as exc:
            log.warning("card %s cannot be an idTag: %s", uid, exc)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._queue.put_nowait, id_tag)

    def _read_uid(self, chip: Mfrc522) -> str | _Unreadable | None:
        """The UID of the card in the field, None if there is none.

        WUPA (not REQA) wakes a card that was halted at the previous poll, so a
        card that stays on the reader keeps answering; HLTA puts it back to
        sleep, so it does not fall out of step with the next wake-up.
        """
        try:
            atqa, _ = chip.transceive([_WUPA], last_bits=7)
        except NoAnswer:
            return None
        except TransceiveError as exc:  # several cards at once: their ATQAs collide
            return _Unreadable(f"wake-up: {exc}")
        try:
            if len(atqa) != 2:
                raise _Unreadable(f"wake-up: {len(atqa)} byte(s) of ATQA")
            return self._select(chip).hex().upper()
        except _Unreadable as exc:
            log.debug("card answered but its UID was not read: %s", exc)
            return exc
        finally:
            self._halt(chip)

    @staticmethod
    def _select(chip: Mfrc522) -> bytes:
        """Anticollision and select through the cascade levels; the full UID."""
        uid = bytearray()
        for sel in _SEL:
            try:
                data, _ = chip.transceive([sel, 0x20])
            except (NoAnswer, TransceiveError) as exc:
                raise _Unreadable(f"anticollision 0x{sel:02X}: {exc}") from None
            if len(data) != 5:
                raise _Unreadable(f"anticollision 0x{sel:02X}: {len(data)} bytes")
            if data[0] ^ data[1] ^ data[2] ^ data[3] != data[4]:
                raise _Unreadable(f"anticollision 0x{sel:02X}: BCC mismatch")
            frame = bytes((sel, 0x70, *data[:5]))
            try:
                sak, bits = chip.transceive(frame + crc_a(frame))
            except (NoAnswer, TransceiveError) as exc:
                raise _Unreadable(f"select 0x{sel:02X}: {exc}") from None
            if len(sak) != 3 or bits != 0:
                raise _Unreadable(f"select 0x{sel:02X}: {len(sak)} bytes, {bits} last bits")
            if sak[1:3] != crc_a(sak[:1]):
                raise _Unreadable(f"select 0x{sel:02X}: SAK CRC mismatch")
            if not sak[0] & _SAK_UID_NOT_COMPLETE:
                uid += data[:4]
                return bytes(uid)
            if data[0] != _CASCADE_TAG:
                raise _Unreadable(f"select 0x{sel:02X}: UID incomplete without cascade tag")
            uid += data[1:4]
        raise _Unreadable("UID longer than three cascade levels")

    @staticmethod
    def _halt(chip: Mfrc522) -> None:
        """HLTA; a halted card does not answer, so silence is success."""
        frame = bytes((_HLTA, 0x00))
        with contextlib.suppress(NoAnswer, TransceiveError):
            chip.transceive(frame + crc_a(frame))

    def _release(self) -> None:
        """Antenna off, then close SPI and let go of the RST line (the chip powers down)."""
        chip, self._chip = self._chip, None
        if chip is not None:
            with contextlib.suppress(Exception):
                chip.antenna_off()
        spi, self._spi = self._spi, None
        if spi is not None:
            with contextlib.suppress(Exception):
                spi.close()
        rst, self._rst = self._rst, None
        if rst is not None:
            with contextlib.suppress(Exception):
                rst.close()
