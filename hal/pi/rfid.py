"""RC522 (NXP MFRC522) card reader on SPI, through the ``mfrc522`` library.

The library talks to the chip with blocking SPI transfers and busy-waits on
the chip's interrupt flags, so the reader is polled in a daemon thread that
hands each UID to the event loop.  ``mfrc522`` imports ``RPi.GPIO`` and
``spidev`` when it is imported, which only works on a Pi: it is imported in
``start()``, never at module import, so that this module loads anywhere.

The library only runs cascade level 1 of the ISO/IEC 14443-3 anticollision
(4-byte UIDs).  Cards with 7 or 10 byte UIDs (MIFARE Ultralight, NTAG, DESFire,
most payment and phone cards) need cascade levels 2 and 3, which are done
here on top of the library's low-level ``MFRC522_ToCard`` and ``CalulateCRC``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from hal.config import ReaderConfig
from hal.errors import ReaderError
from hal.idtag import uid_to_id_tag
from hal.interfaces import Fault

__all__ = ["KNOWN_VERSIONS", "Rc522Reader", "crc_a"]

log = logging.getLogger(__name__)

VERSION_REG = 0x37
BIT_FRAMING_REG = 0x0D
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

    The chip's VersionReg tells whether the module is still on the bus: it is
    read at start, every ``health_interval_s``, and whenever the field looks
    empty (a module that fell off reads 0x00, which is also "no card").  A
    reader that does not answer is Fault.READER_FAILURE until it answers again,
    when it is initialised afresh because it may have lost power meanwhile.
    """

    def __init__(
        self,
        cfg: ReaderConfig,
        *,
        absent_polls: int = 3,
        health_interval_s: float = 2.0,
        spi_speed_hz: int = 1_000_000,
    ) -> None:
        self._cfg = cfg
        self._absent_polls = max(1, absent_polls)
        self._health_interval_s = health_interval_s
        self._spi_speed_hz = spi_speed_hz
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lib: Any = None  # the mfrc522 module, imported by start()
        self._gpio: Any = None
        self._dev: Any = None  # the mfrc522.MFRC522 instance, once the SPI device is open
        self._failing = False
        self._next_health = 0.0
        self._card: str | None = None  # UID of the card on the reader
        self._absent = 0

    # -- RfidReader ------------------------------------------------------------
    async def next_card(self) -> str:
        """Wait for the next card; while the reader is dead this keeps waiting."""
        return await self._queue.get()

    def faults(self) -> frozenset[Fault]:
        return frozenset({Fault.READER_FAILURE}) if self._failing else frozenset()

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Open the reader and start polling.

        Raises ReaderError when the Pi libraries are missing (a setup error).
        A reader that does not answer is not an error here: it shows as
        Fault.READER_FAILURE and is retried, since the station can still charge
        with remote starts.
        """
        if self._thread is not None:
            return
        try:
            import mfrc522  # imports RPi.GPIO and spidev: Pi only
            import RPi.GPIO as gpio
        except (ImportError, RuntimeError) as exc:
            raise ReaderError(
                f"RC522 reader needs mfrc522, spidev and RPi.GPIO (chargerd[pi]): {exc}"
            ) from exc
        self._lib, self._gpio = mfrc522, gpio
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
            if self._dev is None:
                self._open()
            now = time.monotonic()
            if self._failing or now >= self._next_health:
                self._check_health()
                self._next_health = now + self._health_interval_s
            if poll:
                self._track(self._read_uid())
        except Exception as exc:  # any SPI or library failure is a reader failure
            self._fail(exc)

    def _open(self) -> None:
        # The library adds a StreamHandler to its logger at every construction; a
        # reader retried every poll would pile them up.  Its records go through
        # the process's logging configuration instead.
        lib_log = logging.getLogger("mfrc522Logger")
        handlers = list(lib_log.handlers)
        try:
            self._dev = self._lib.MFRC522(
                bus=self._cfg.spi_bus,
                device=self._cfg.spi_device,
                spd=self._spi_speed_hz,
                pin_mode=self._gpio.BCM,
                pin_rst=self._cfg.rst_pin,
            )
        finally:
            lib_log.handlers[:] = handlers

    def _check_health(self) -> None:
        version = self._dev.Read_MFRC522(VERSION_REG)
        if version not in KNOWN_VERSIONS:
            raise ReaderError(f"RC522 does not answer (VersionReg 0x{version:02X})")
        if self._failing:
            # It may have lost power meanwhile: registers and antenna are back at reset.
            self._dev.MFRC522_Init()
            self._failing = False
            log.info("RC522 reader answers again (%s)", KNOWN_VERSIONS[version])

    def _fail(self, exc: Exception) -> None:
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

    def _read_uid(self) -> str | _Unreadable | None:
        """The UID of the card in the field, None if there is none.

        WUPA (not REQA) wakes a card that was halted at the previous poll, so a
        card that stays on the reader keeps answering; HLTA puts it back to
        sleep, so it does not fall out of step with the next wake-up.
        """
        dev = self._dev
        status, _ = dev.MFRC522_Request(_WUPA)
        if status != dev.MI_OK:
            # A module that fell off the bus looks like an empty field: make
            # sure of the reader before counting the card as gone.
            self._check_health()
            return None
        try:
            return self._select().hex().upper()
        except _Unreadable as exc:
            log.debug("card answered but its UID was not read: %s", exc)
            return exc
        finally:
            self._halt()

    def _select(self) -> bytes:
        """Anticollision and select through the cascade levels; the full UID."""
        dev = self._dev
        uid = bytearray()
        for sel in _SEL:
            dev.Write_MFRC522(BIT_FRAMING_REG, 0x00)
            status, data, _ = dev.MFRC522_ToCard(dev.PCD_TRANSCEIVE, [sel, 0x20])
            if status != dev.MI_OK or len(data) != 5:
                raise _Unreadable(f"anticollision 0x{sel:02X}: status {status}, {len(data)} bytes")
            if data[0] ^ data[1] ^ data[2] ^ data[3] != data[4]:
                raise _Unreadable(f"anticollision 0x{sel:02X}: BCC mismatch")
            frame = [sel, 0x70, *data[:5]]
            frame += dev.CalulateCRC(frame)
            status, sak, bits = dev.MFRC522_ToCard(dev.PCD_TRANSCEIVE, frame)
            if status != dev.MI_OK or bits != 24 or len(sak) < 3:
                raise _Unreadable(f"select 0x{sel:02X}: status {status}, {bits} bits")
            if bytes(sak[1:3]) != crc_a(sak[:1]):
                raise _Unreadable(f"select 0x{sel:02X}: SAK CRC mismatch")
            if not sak[0] & _SAK_UID_NOT_COMPLETE:
                uid += bytes(data[:4])
                return bytes(uid)
            if data[0] != _CASCADE_TAG:
                raise _Unreadable(f"select 0x{sel:02X}: UID incomplete without cascade tag")
            uid += bytes(data[1:4])
        raise _Unreadable("UID longer than three cascade levels")

    def _halt(self) -> None:
        dev = self._dev
        dev.Write_MFRC522(BIT_FRAMING_REG, 0x00)
        frame = [_HLTA, 0x00]
        dev.MFRC522_ToCard(dev.PCD_TRANSCEIVE, frame + list(crc_a(frame)))

    def _release(self) -> None:
        """Close SPI and free our RST pin only.

        Not the library's Close_MFRC522: its GPIO.cleanup() without a pin
        would also release every other RPi.GPIO line of the process, such as
        a contactor driven through the same library.
        """
        dev, self._dev = self._dev, None
        if dev is None:
            return
        with contextlib.suppress(Exception):
            dev.AntennaOff()
        with contextlib.suppress(Exception):
            dev.spi.close()
        with contextlib.suppress(Exception):
            self._gpio.cleanup(self._cfg.rst_pin)
