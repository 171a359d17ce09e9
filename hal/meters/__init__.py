"""Energy meter register maps, kept as data (one TOML file per meter model).

A new meter model is a new ``<model>.toml`` next to this file, not new code: the
driver (hal.pi.meter) only knows how to read register blocks and decode the
numeric types listed in ``TYPES``.  Each quantity of a map is named after the
MeterSample field it fills (``energy_wh``, ``power_w``, ``voltage_v``, ...), and
its ``scale`` turns the meter's unit into that field's unit (kWh -> Wh: 1000).
"""

from __future__ import annotations

import math
import re
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from hal.errors import HardwareConfigError
from hal.interfaces import MeterSample

__all__ = [
    "TYPES",
    "Block",
    "Register",
    "RegisterMap",
    "known_models",
    "load_register_map",
]

# type name -> (struct format of the big-endian bytes, number of 16-bit registers)
TYPES: dict[str, tuple[str, int]] = {
    "float32": (">f", 2),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "int16": (">h", 1),
    "uint16": (">H", 1),
}
_SCALAR = ("energy_wh", "power_w", "frequency_hz")
_PER_PHASE = ("voltage_v", "current_a", "power_per_phase_w")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Register:
    """One value of the meter: where it lives and how it becomes a number."""

    address: int
    type: str = "float32"
    scale: float = 1.0
    unit: str = ""
    word_order: Literal["big", "little"] = "big"

    @property
    def width(self) -> int:
        return TYPES[self.type][1]

    def decode(self, words: Sequence[int]) -> float:
        """The value of ``words`` (this register's 16-bit words, in address order)."""
        fmt, width = TYPES[self.type]
        ordered = list(words[:width])
        if self.word_order == "little":
            ordered.reverse()
        raw = struct.unpack(fmt, struct.pack(f">{width}H", *ordered))[0]
        return float(raw) * self.scale


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``start``."""

    start: int
    count: int


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where one meter model keeps the quantities of a MeterSample."""

    model: str
    description: str
    function: Literal["input", "holding"]
    phases: int
    max_registers: int
    max_gap: int
    energy_wh: Register
    power_w: Register | None = None
    voltage_v: tuple[Register, ...] = ()
    current_a: tuple[Register, ...] = ()
    power_per_phase_w: tuple[Register, ...] = ()
    frequency_hz: Register | None = None

    def registers(self) -> tuple[Register, ...]:
        scalars = (self.energy_wh, self.power_w, self.frequency_hz)
        return (
            *(r for r in scalars if r is not None),
            *self.voltage_v,
            *self.current_a,
            *self.power_per_phase_w,
        )

    def blocks(self) -> tuple[Block, ...]:
        """The fewest read requests that cover every register of the map.

        Every request on an RS485 bus costs a turnaround (tens of ms at 9600
        baud), so registers closer than ``max_gap`` are read together, up to the
        meter's ``max_registers`` per request.
        """
        spans = sorted({(r.address, r.address + r.width) for r in self.registers()})
        blocks: list[list[int]] = []
        for start, end in spans:
            if blocks:
                current = blocks[-1]
                fits = max(current[1], end) - current[0] <= self.max_registers
                if start - current[1] <= self.max_gap and fits:
                    current[1] = max(current[1], end)
                    continue
            blocks.append([start, end])
        return tuple(Block(start, end - start) for start, end in blocks)

    def decode(self, words: Mapping[int, int]) -> MeterSample:
        """Build a MeterSample from register values (address -> 16-bit word).

        A quantity that decodes as NaN or infinity is reported as None (the
        meter does not deliver it in this wiring); the energy register is kept
        as read, so that the caller can refuse a bad energy value.
        """

        def value(reg: Register | None) -> float | None:
            if reg is None:
                return None
            v = reg.decode([words[reg.address + i] for i in range(reg.width)])
            return v if math.isfinite(v) else None

        energy = self.energy_wh.decode(
            [words[self.energy_wh.address + i] for i in range(self.energy_wh.width)]
        )
        return MeterSample(
            energy_wh=energy,
            power_w=value(self.power_w),
            voltage_v=tuple(value(r) for r in self.voltage_v),
            current_a=tuple(value(r) for r in self.current_a),
            power_per_phase_w=tuple(value(r) for r in self.power_per_phase_w),
            frequency_hz=value(self.frequency_hz),
        )


def known_models() -> list[str]:
    """The meter models a register map is shipped for, sorted."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".toml")
    )


def load_register_map(model: str) -> RegisterMap:
    """The register map of ``model`` (case-insensitive, e.g. "sdm630").

    Raises HardwareConfigError for an unknown model (naming the known ones) or
    a map file that does not make sense, so that a typo in the configuration
    stops the daemon at start-up rather than at the first reading.
    """
    name = model.strip().lower()
    known = known_models()
    if not _MODEL_NAME.match(name) or name not in known:
        raise HardwareConfigError(
            f"unknown meter model {model!r}; known models: {', '.join(known)}"
        )
    source = resources.files(__name__).joinpath(f"{name}.toml")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
        return _parse(name, data)
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise HardwareConfigError(f"register map {name}.toml is invalid: {exc}") from exc


def _parse(name: str, data: dict[str, Any]) -> RegisterMap:
    function = data.get("function", "input")
    if function not in ("input", "holding"):
        raise ValueError(f"function must be 'input' or 'holding', not {function!r}")
    word_order = data.get("word_order", "big")
    if word_order not in ("big", "little"):
        raise ValueError(f"word_order must be 'big' or 'little', not {word_order!r}")
    phases = int(data.get("phases", 1))
    if phases not in (1, 3):
        raise ValueError(f"phases must be 1 or 3, not {phases}")
    unknown = set(data) - {
        "model",
        "description",
        "function",
        "word_order",
        "phases",
        "max_registers",
        "max_gap",
        *_SCALAR,
        *_PER_PHASE,
    }
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if "energy_wh" not in data:
        raise ValueError("the energy_wh register is required")
    max_registers = int(data.get("max_registers", 125))  # Modbus limit of one request
    if not 2 <= max_registers <= 125:
        raise ValueError("max_registers must be within 2..125")

    def register(table: dict[str, Any], address: int) -> Register:
        kind = table.get("type", "float32")
        if kind not in TYPES:
            raise ValueError(f"type {kind!r} is not one of {sorted(TYPES)}")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"address {address} out of range")
        return Register(
            address=address,
            type=kind,
            scale=float(table.get("scale", 1.0)),
            unit=str(table.get("unit", "")),
            word_order=word_order,
        )

    scalars = {
        key: register(data[key], int(data[key]["address"])) for key in _SCALAR if key in data
    }
    per_phase: dict[str, tuple[Register, ...]] = {}
    for key in _PER_PHASE:
        if key not in data:
            continue
        regs = tuple(register(data[key], int(a)) for a in data[key]["addresses"])
        if len(regs) != phases:
            raise ValueError(f"{key} has {len(regs)} addresses for {phases} phase(s)")
        per_phase[key] = regs
    return RegisterMap(
        model=str(data.get("model", name)),
        description=str(data.get("description", name)),
        function=function,
        phases=phases,
        max_registers=max_registers,
        max_gap=int(data.get("max_gap", 0)),
        **scalars,
        **per_phase,
    )
