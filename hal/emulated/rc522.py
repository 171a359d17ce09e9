"""An MFRC522 (RC522) at the register level, ISO 14443-3 type A cards, and the
wiring that puts the chip behind a gpiozero pin factory's SPI port and RST pin.

The chip is emulated as far as a reader driver can see it through SPI: the
register addressing of the SPI protocol, the FIFO, the Transceive / CalcCRC /
SoftReset commands, the interrupt flags, ErrorReg, RxLastBits, the CRC
coprocessor and the VersionReg.  Time is modelled where a driver can see it:
an answer arrives (RxIRq) after the frames' air time, and a transceive that
gets none ends when the chip's timer (TModeReg TAuto, TPrescalerReg,
TReloadReg) runs out (TimerIRq); with the timer not configured no interrupt
ever comes, as on the chip.  ``transfers`` counts SPI transfers.

Cards answer in the field only while the antenna is on and follow the
ISO 14443-3 state machine (IDLE, READY, ACTIVE, HALT) with cascade levels for
4, 7 and 10 byte UIDs.  A test places and removes cards, can kill the chip
(silent bus or SPI errors) or give it a ``brownout()`` (registers back to
their reset values, antenna off, VersionReg fine).

``attach(factory, chip)`` puts the chip on a gpiozero (Mock)Factory: behind
``factory.spi(port=0, device=0)`` and with its NRSTPD on the factory's RST pin
(the chip answers only while that pin is driven high, and comes out of reset
when it rises), which is how hal.pi.rfid reaches it on a Pi.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# Registers
COMMAND, COMM_IEN, DIV_IEN, COMM_IRQ, DIV_IRQ, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING, COLL = 0x09, 0x0A, 0x0C, 0x0D, 0x0E
MODE, TX_CONTROL, CRC_RESULT_H, CRC_RESULT_L, T_MODE, VERSION = 0x11, 0x14, 0x21, 0x22, 0x2A, 0x37
T_PRESCALER, T_RELOAD_H, T_RELOAD_L = 0x2B, 0x2C, 0x2D
BIT_S = 128 / 13.56e6  # one bit at 106 kbit/s
FDT_S = 1236 / 13.56e6  # a card's frame delay time after a reader frame (ISO 14443-3)
# Commands
IDLE, CALC_CRC, TRANSMIT, TRANSCEIVE, SOFT_RESET = 0x00, 0x03, 0x04, 0x0C, 0x0F
# CommIrqReg bits
TX_IRQ, RX_IRQ, IDLE_IRQ, TIMER_IRQ = 0x40, 0x20, 0x10, 0x01
CRC_IRQ = 0x04  # DivIrqReg
COLL_ERR = 0x08  # ErrorReg

_RESET_VALUES = {
    COMMAND: 0x20,
    COMM_IEN: 0x80,
    COMM_IRQ: 0x14,
    CONTROL: 0x10,
    COLL: 0xA0,
    MODE: 0x3F,
    TX_CONTROL: 0x80,  # antenna drivers off
    0x16: 0x10,
    0x17: 0x84,
    0x18: 0x84,
    0x19: 0x4D,
    0x24: 0x26,
    0x26: 0x48,
    0x27: 0x88,
    0x28: 0x20,
    0x29: 0x20,
}


def crc_a(data: Iterable[int]) -> bytes:
    """ISO/IEC 14443-3 CRC_A (initial 0x6363), low byte first as transmitted."""
    crc = 0x6363
    for byte in data:
        b = (byte ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return bytes((crc & 0xFF, crc >> 8))


class Card:
    """An ISO 14443-3 type A PICC with a 4, 7 or 10 byte UID."""

    SEL = (0x93, 0x95, 0x97)

    def __init__(self, uid: str | bytes, *, sak: int | None = None) -> None:
        self.uid = bytes.fromhex(uid) if isinstance(uid, str) else bytes(uid)
        if len(self.uid) not in (4, 7, 10):
            raise ValueError("a type A UID has 4, 7 or 10 bytes")
        levels = {4: 1, 7: 2, 10: 3}[len(self.uid)]
        self.atqa = bytes(((0x04 | ((levels - 1) << 6)), 0x00))
        self.sak = {4: 0x08, 7: 0x00, 10: 0x20}[len(self.uid)] if sak is None else sak
        u = self.uid
        # The UID CLn of each cascade level; 0x88 (cascade tag) marks "more to come".
        self.cln = [
            [u[0:4]],
            [b"\x88" + u[0:3], u[3:7]],
            [b"\x88" + u[0:3], b"\x88" + u[3:6], u[6:10]],
        ][levels - 1]
        self.power_off()

    def power_off(self) -> None:
        self.state = "IDLE"
        self.level = 0
        self.halted = False  # woken from HALT: falls back to HALT, not IDLE

    def _unexpected(self) -> None:
        self.state = "HALT" if self.halted else "IDLE"
        self.level = 0

    def receive(self, frame: bytes, last_bits: int) -> bytes | None:
        """The card's answer to a frame from the reader, or None (silence)."""
        if len(frame) == 1 and last_bits == 7:  # short frame
            cmd = frame[0] & 0x7F
            if (cmd == 0x26 and self.state == "IDLE") or (
                cmd == 0x52 and self.state in ("IDLE", "HALT")
            ):
                self.halted = self.state == "HALT"
                self.state, self.level = "READY", 0
                return self.atqa
            if self.state in ("READY", "ACTIVE"):
                self._unexpected()
            return None
        if last_bits != 0 or self.state in ("IDLE", "HALT"):
            return None
        if self.state == "READY":
            return self._anticollision(frame)
        # ACTIVE: HLTA is the only command of ours; memory commands are not emulated.
        if frame == b"\x50\x00" + crc_a(b"\x50\x00"):
            self.state, self.halted = "HALT", True
            return None
        self._unexpected()
        return None

    def _anticollision(self, frame: bytes) -> bytes | None:
        sel = self.SEL[self.level]
        cln = self.cln[self.level]
        bcc = cln[0] ^ cln[1] ^ cln[2] ^ cln[3]
        if len(frame) == 2 and frame[0] == sel and frame[1] == 0x20:
            return cln + bytes((bcc,))
        if (
            len(frame) == 9
            and frame[0] == sel
            and frame[1] == 0x70
            and frame[2:7] == cln + bytes((bcc,))
            and frame[7:] == crc_a(frame[:7])
        ):
            if self.level + 1 < len(self.cln):
                self.level += 1
                sak = bytes((0x04,))
            else:
                self.state = "ACTIVE"
                sak = bytes((self.sak,))
            return sak + crc_a(sak)
        self._unexpected()
        return None


class Rc522:
    """The chip.  Thread-safe: the driver polls it from its worker thread.

    ``clock`` is the time the chip's timer and the air time run on (a test's
    fake clock makes transfer counts deterministic).
    """

    def __init__(self, version: int = 0x92, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.version = version
        self.cards: list[Card] = []
        self.dead: str | None = None  # None, "silent" (reads 0x00) or "error" (SPI raises)
        self.rst_high = False  # NRSTPD; the chip is in hard power-down while low
        self.reset_line: Any = None  # a gpiozero MockPin wired to NRSTPD (see attach())
        self.transfers = 0
        self.wakeups = 0  # REQA/WUPA frames sent: one per poll of a driver
        self.resets = 0  # power-on resets (RST rising, SoftReset, brown-out, revive)
        self._clock = clock
        self._pending: tuple[float, bytes | None, bool] | None = None  # (at, answer, collided)
        self._lock = threading.RLock()
        self._power_on()

    # -- what a test does ------------------------------------------------------
    def place(self, *cards: Card) -> None:
        with self._lock:
            for card in cards:
                card.power_off()
                self.cards.append(card)

    def remove(self, card: Card | None = None) -> None:
        with self._lock:
            if card is None:
                self.cards.clear()
            else:
                self.cards.remove(card)

    def kill(self, mode: str = "silent") -> None:
        """Unplug the module: the bus reads 0x00 ("silent") or the SPI ioctl fails ("error")."""
        with self._lock:
            self.dead = mode

    def revive(self) -> None:
        """Plug it back in: it comes up from power-on reset (antenna off)."""
        with self._lock:
            self.dead = None
            self._power_on()

    def brownout(self) -> None:
        """A supply dip: every register back to its reset value (antenna off, timer
        stopped) while the chip keeps answering on SPI with a valid VersionReg."""
        with self._lock:
            self._power_on()

    @property
    def antenna_on(self) -> bool:
        return self.regs[TX_CONTROL] & 0x03 == 0x03

    def timer_s(self) -> float | None:
        """How long the chip's timer runs after a frame; None when TAuto is off."""
        if not self.regs[T_MODE] & 0x80:
            return None
        prescaler = (self.regs[T_MODE] & 0x0F) << 8 | self.regs[T_PRESCALER]
        reload = self.regs[T_RELOAD_H] << 8 | self.regs[T_RELOAD_L]
        return (2 * prescaler + 1) * (reload + 1) / 13.56e6

    # -- SPI -------------------------------------------------------------------
    def transfer(self, data: list[int]) -> list[int]:
        """One chip-select period: the bytes clocked out for the bytes clocked in."""
        with self._lock:
            self.transfers += 1
            if self.dead == "error":
                raise OSError(errno.EIO, "Input/output error")
            self._follow_reset_line()
            if self.dead == "silent" or not self.rst_high:
                return [0] * len(data)
            self._advance()
            addr = data[0]
            reg = (addr >> 1) & 0x3F
            if addr & 0x80:  # read: every further byte reads the register again
                return [0] + [self._read(reg) for _ in data[1:]]
            for value in data[1:]:
                self._write(reg, value & 0xFF)
            return [0] * len(data)

    xfer = transfer  # spidev's name

    def set_reset_pin(self, high: bool) -> None:
        with self._lock:
            if high and not self.rst_high:
                self._power_on()
            self.rst_high = high

    def _follow_reset_line(self) -> None:
        if self.reset_line is not None:
            self.set_reset_pin(bool(self.reset_line.state))

    def _advance(self) -> None:
        """Let the air time pass: the answer lands, or the timer runs out."""
        if self._pending is None or self._clock() < self._pending[0]:
            return
        _, answer, collided = self._pending
        self._pending = None
        if answer is None:
            self.regs[COMM_IRQ] |= TIMER_IRQ
            return
        if collided:
            self.regs[ERROR] |= COLL_ERR
        self.fifo.extend(answer)
        self.regs[COMM_IRQ] |= RX_IRQ

    # -- registers -------------------------------------------------------------
    def _power_on(self) -> None:
        self.resets += 1
        self._pending = None
        self.regs = [0] * 64
        for reg, value in _RESET_VALUES.items():
            self.regs[reg] = value
        self.fifo: list[int] = []
        for card in self.cards:
            card.power_off()

    def _read(self, reg: int) -> int:
        if reg == FIFO_DATA:
            return self.fifo.pop(0) if self.fifo else 0
        if reg == FIFO_LEVEL:
            return len(self.fifo)
        if reg == VERSION:
            return self.version
        return self.regs[reg]

    def _write(self, reg: int, value: int) -> None:
        if reg == FIFO_DATA:
            if len(self.fifo) < 64:
                self.fifo.append(value)
        elif reg == FIFO_LEVEL:
            if value & 0x80:  # FlushBuffer
                self.fifo.clear()
        elif reg in (COMM_IRQ, DIV_IRQ):  # bit 7 Set1/Set2: set or clear the marked bits
            if value & 0x80:
                self.regs[reg] |= value & 0x7F
            else:
                self.regs[reg] &= ~value & 0x7F
        elif reg == COMMAND:
            self.regs[COMMAND] = value
            self._command(value & 0x0F)
        elif reg == BIT_FRAMING:
            start = value & 0x80 and not self.regs[BIT_FRAMING] & 0x80
            self.regs[BIT_FRAMING] = value
            if start and self.regs[COMMAND] & 0x0F == TRANSCEIVE:
                self._transceive()
        elif reg in (ERROR, VERSION, CRC_RESULT_H, CRC_RESULT_L):
            pass  # read-only
        elif reg == TX_CONTROL:
            was_on = self.antenna_on
            self.regs[reg] = value
            if was_on and not self.antenna_on:
                for card in self.cards:
                    card.power_off()
        else:
            self.regs[reg] = value

    def _command(self, command: int) -> None:
        if command == SOFT_RESET:
            self._power_on()
            return
        if command == IDLE:
            self._pending = None  # Idle cancels a running transceive
            return
        self.regs[ERROR] = 0
        if command == CALC_CRC:
            crc = crc_a(self.fifo)
            self.fifo.clear()
            self.regs[CRC_RESULT_L], self.regs[CRC_RESULT_H] = crc[0], crc[1]
            self.regs[DIV_IRQ] |= CRC_IRQ
        elif command == TRANSMIT:
            self._send()
            self.regs[COMM_IRQ] |= TX_IRQ | IDLE_IRQ
            self.regs[COMMAND] = IDLE

    def _send(self) -> list[bytes]:
        """Put the FIFO on the air; the answers of the cards in the field."""
        frame = bytes(self.fifo)
        self.fifo.clear()
        last_bits = self.regs[BIT_FRAMING] & 0x07
        if last_bits == 7 and frame in (b"\x26", b"\x52"):
            self.wakeups += 1
        if not self.antenna_on:
            return []
        answers = [card.receive(frame, last_bits) for card in self.cards]
        return [a for a in answers if a is not None]

    def _transceive(self) -> None:
        frame_bits = len(self.fifo) * 9
        answers = self._send()
        self.regs[COMM_IRQ] |= TX_IRQ
        self.regs[CONTROL] &= ~0x07
        now = self._clock()
        if not answers:
            timer = self.timer_s()
            # Without TAuto the timer never starts: no interrupt comes, ever.
            self._pending = None
            if timer is not None:
                self._pending = (now + frame_bits * BIT_S + timer, None, False)
            return
        collided = any(a != answers[0] for a in answers)
        answer = answers[0]
        if collided:
            # Several cards answered differently: the bits collide on the air.
            merged = bytearray(max(len(a) for a in answers))
            for a in answers:
                for i, b in enumerate(a):
                    merged[i] |= b
            answer = bytes(merged)
        air = (frame_bits + len(answer) * 9) * BIT_S + FDT_S
        self._pending = (now + air, answer, collided)


def attach(factory: Any, chip: Rc522, *, port: int = 0, device: int = 0, rst_pin: int = 25) -> None:
    """Wire ``chip`` to a gpiozero MockFactory as on a board.

    Its NRSTPD follows the factory's ``rst_pin`` (a MockPin: the chip sleeps
    while it is low and resets when it rises), and ``factory.spi(port=port,
    device=device)`` hands out a port onto the chip; other SPI ports are the
    factory's own.
    """
    chip.reset_line = factory.pin(rst_pin)
    inner = factory.spi

    def spi(**spi_args: Any) -> Any:
        if (spi_args.get("port"), spi_args.get("device")) == (port, device):
            return Rc522Port(chip)
        return inner(**spi_args)

    factory.spi = spi


class Rc522Port:
    """An SPI port onto the chip with gpiozero's SPI interface (transfer, close)."""

    def __init__(self, chip: Rc522) -> None:
        self.chip: Rc522 | None = chip
        self.rate = 500_000
        self.clock_mode = 0

    @property
    def closed(self) -> bool:
        return self.chip is None

    def transfer(self, data: list[int]) -> list[int]:
        if self.chip is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self.chip.transfer(list(data))

    def close(self) -> None:
        self.chip = None
