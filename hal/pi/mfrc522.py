"""The NXP MFRC522 (RC522) at register level, over any SPI port.

Our own few registers instead of the ``mfrc522`` package, because that
package cannot be used on the station as it is:

- it imports ``RPi.GPIO`` and drives the RST line through it, whatever the
  station's gpiozero pin factory (``/dev/gpiomem`` is blocked by the unit's
  ``DevicePolicy=closed`` on a Pi 4, RPi.GPIO does not work at all on a Pi 5);
  here RST is a gpiozero output on the station's pin factory (hal.pi.rfid) and
  SPI is the pin factory's SPI port, so one GPIO stack serves Pi 3, 4 and 5;
- its wait loop uses ``~`` as a logical not and ignores the chip's timer:
  every empty poll costs ~2,000 SPI transfers on the bus the pilot's ADC
  shares.  Here the chip's own timer ends a transceive that gets no answer
  (``TimerIRq``), the interrupt register is polled at a bounded rate
  (``irq_poll_s``) and a wall-clock deadline ends the wait even when the timer
  does not run (a chip reset by a brown-out has TAuto off): an empty poll costs
  about fifteen transfers.

``clock`` and ``sleep`` are injectable so that the transfer counts are tested
deterministically against the emulated chip (hal.emulated.rc522).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from hal.errors import ReaderError

__all__ = ["CONFIG", "ChipTimeout", "Mfrc522", "NoAnswer", "SpiPort", "TransceiveError"]

# Registers (datasheet §9)
COMMAND, COMM_IRQ, DIV_IRQ, ERROR = 0x01, 0x04, 0x05, 0x06
FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING = 0x09, 0x0A, 0x0C, 0x0D
MODE, TX_CONTROL, TX_ASK = 0x11, 0x14, 0x15
T_MODE, T_PRESCALER, T_RELOAD_H, T_RELOAD_L = 0x2A, 0x2B, 0x2C, 0x2D
VERSION = 0x37
# Commands
IDLE, TRANSCEIVE, SOFT_RESET = 0x00, 0x0C, 0x0F
POWER_DOWN = 0x10  # CommandReg bit 4: set while the chip is still in reset / power-down
# CommIrqReg
RX_IRQ, IDLE_IRQ, ERR_IRQ, TIMER_IRQ = 0x20, 0x10, 0x02, 0x01
START_SEND = 0x80  # BitFramingReg
# ErrorReg: buffer overflow, collision, CRC, parity, protocol
BUFFER_OVFL, COLL_ERR, CRC_ERR, PARITY_ERR, PROTOCOL_ERR = 0x10, 0x08, 0x04, 0x02, 0x01

#: The configuration the reader depends on, as (register, mask, value); a
#: brown-out resets them (antenna off, timer stopped) while VersionReg still
#: reads fine, so the health check compares these, not only the version.
#: The timer: TAuto, prescaler 0x0A9 -> 13.56 MHz / (2*169+1) = 40 kHz (25 us per
#: tick), reload 200 -> a transceive without an answer ends after 5.0 ms, far
#: above an ISO 14443-3 answer's frame delay (~90 us) and anticollision frames.
CONFIG: tuple[tuple[int, int, int], ...] = (
    (T_MODE, 0xFF, 0x80),
    (T_PRESCALER, 0xFF, 0xA9),
    (T_RELOAD_H, 0xFF, 0x00),
    (T_RELOAD_L, 0xFF, 0xC8),
    (TX_ASK, 0xFF, 0x40),  # 100 % ASK modulation, as type A needs
    (MODE, 0xFF, 0x3D),  # CRC preset 0x6363 (ISO 14443-3)
    (TX_CONTROL, 0x03, 0x03),  # antenna drivers TX1 and TX2 on
)
TIMER_S = (2 * 0xA9 + 1) * (0xC8 + 1) / 13.56e6


class SpiPort(Protocol):
    """What the driver needs of an SPI port (gpiozero's SPI interface has it)."""

    def transfer(self, data: list[int]) -> list[int]: ...

    def close(self) -> None: ...


class NoAnswer(Exception):
    """The chip's timer ran out: nothing in the field answered (an empty field)."""


class TransceiveError(Exception):
    """Something answered but the frame is bad (collision, parity, CRC...)."""


class ChipTimeout(ReaderError):
    """No interrupt within the wall-clock deadline: the chip is not set up, or gone."""


class Mfrc522:
    """Register access, initialisation, health read-back and a bounded transceive."""

    def __init__(
        self,
        spi: SpiPort,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        irq_poll_s: float = 0.001,
        deadline_s: float = 0.03,
    ) -> None:
        self.spi = spi
        self._clock = clock
        self._sleep = sleep
        self._irq_poll_s = irq_poll_s
        self._deadline_s = deadline_s

    # -- registers (datasheet §8.1.2: address byte 0AAAAAA0, MSB set to read) -----------
    def read(self, reg: int) -> int:
        return self.spi.transfer([0x80 | (reg << 1) & 0x7E, 0])[1]

    def read_many(self, reg: int, count: int) -> list[int]:
        """``count`` reads of one register in a single transfer (the FIFO)."""
        if count <= 0:
            return []
        addr = 0x80 | (reg << 1) & 0x7E
        return self.spi.transfer([addr] * count + [0])[1:]

    def write(self, reg: int, *values: int) -> None:
        self.spi.transfer([(reg << 1) & 0x7E, *(v & 0xFF for v in values)])

    def version(self) -> int:
        return self.read(VERSION)

    # -- set-up and health ----------------------------------------------------------------
    def init(self) -> None:
        """Soft reset, then the configuration of :data:`CONFIG`.

        Raises ChipTimeout when the chip does not leave its reset (no chip, or
        one held in power-down by its RST line).
        """
        self.write(COMMAND, SOFT_RESET)
        deadline = self._clock() + 0.05
        while self.read(COMMAND) & POWER_DOWN:
            if self._clock() > deadline:
                raise ChipTimeout("RC522 stays in power-down after a soft reset")
            self._sleep(self._irq_poll_s)
        for reg, mask, value in CONFIG:
            if mask == 0xFF:
                self.write(reg, value)
            else:
                self.write(reg, (self.read(reg) & ~mask & 0xFF) | value)

    def mismatches(self) -> list[str]:
        """The configuration registers that do not read back what :meth:`init` wrote."""
        wrong = []
        for reg, mask, value in CONFIG:
            got = self.read(reg)
            if got & mask != value:
                wrong.append(f"reg 0x{reg:02X} reads 0x{got:02X}, wants 0x{value:02X}/0x{mask:02X}")
        return wrong

    def antenna_off(self) -> None:
        self.write(TX_CONTROL, self.read(TX_CONTROL) & ~0x03 & 0xFF)

    # -- transceive ------------------------------------------------------------------------
    def transceive(self, frame: bytes | list[int], *, last_bits: int = 0) -> tuple[bytes, int]:
        """Send ``frame`` (its last byte ``last_bits`` long, 0 = whole); the answer and its
        last byte's valid bits (0 = whole).

        Raises NoAnswer when the chip's timer ran out (an empty field),
        TransceiveError for a damaged answer and ChipTimeout when neither an
        answer nor the timer came within the deadline.
        """
        self.write(COMMAND, IDLE)  # stop whatever ran
        self.write(COMM_IRQ, 0x7F)  # clear every interrupt flag
        self.write(FIFO_LEVEL, 0x80)  # flush the FIFO
        self.write(FIFO_DATA, *frame)
        self.write(BIT_FRAMING, last_bits & 0x07)
        self.write(COMMAND, TRANSCEIVE)
        self.write(BIT_FRAMING, START_SEND | last_bits & 0x07)
        deadline = self._clock() + self._deadline_s
        try:
            while True:
                irq = self.read(COMM_IRQ)
                if irq & (RX_IRQ | IDLE_IRQ):
                    break
                if irq & TIMER_IRQ:
                    raise NoAnswer("no answer before the chip's timer ran out")
                if self._clock() >= deadline:
                    raise ChipTimeout(
                        f"RC522: no interrupt within {self._deadline_s * 1000:.0f} ms "
                        f"(CommIrqReg 0x{irq:02X}): timer not running"
                    )
                self._sleep(self._irq_poll_s)
        finally:
            self.write(COMMAND, IDLE)
        error = self.read(ERROR)
        if error & (BUFFER_OVFL | COLL_ERR | PARITY_ERR | PROTOCOL_ERR):
            raise TransceiveError(f"ErrorReg 0x{error:02X}")
        level = self.read(FIFO_LEVEL) & 0x7F
        rx_last_bits = self.read(CONTROL) & 0x07
        return bytes(self.read_many(FIFO_DATA, level)), rx_last_bits
