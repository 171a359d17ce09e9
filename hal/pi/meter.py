"""Energy meters on a Modbus RTU bus (RS485) or behind a Modbus TCP gateway.

One ``ModbusBus`` per physical bus: the meters of all connectors share it, and
RS485 is half-duplex, so every request holds the bus lock until its answer (or
its timeout) is in and the line has been quiet for the inter-frame gap.  The
bus connects lazily and reconnects on the next request after a failure, so a
meter that was unplugged comes back without a restart.

What a meter model keeps where is data (hal/meters/<model>.toml); this module
knows only how to read register blocks and when a reading is not to be trusted.

Whatever the Modbus library raises (its own exceptions, an OSError of the
serial port, a TypeError of an API that changed under us) surfaces as a
MeterError, i.e. as a meter fault: a meter is never a reason for the daemon
to stop.  pymodbus changes its API in minor releases (``slave=`` became
``device_id=`` in 3.10), so pyproject.toml pins the minor release tested.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from hal.config import MeterBusConfig
from hal.errors import HardwareConfigError, MeterError
from hal.interfaces import Fault, MeterSample
from hal.meters import Block, RegisterMap, load_register_map

__all__ = ["ModbusBus", "ModbusMeter"]

log = logging.getLogger(__name__)

_Client = AsyncModbusSerialClient | AsyncModbusTcpClient


class ModbusBus:
    """One Modbus client and the lock that keeps its requests one at a time."""

    def __init__(
        self,
        cfg: MeterBusConfig,
        *,
        retries: int = 1,
        inter_frame_delay_s: float | None = None,
    ) -> None:
        if cfg.transport not in ("rtu", "tcp"):
            raise HardwareConfigError(f"meter bus transport {cfg.transport!r} is not rtu or tcp")
        self._cfg = cfg
        self._retries = retries
        if inter_frame_delay_s is None:
            # RTU: at least 3.5 character times (11 bits each) of silence between
            # frames; 5 ms floor because a USB-RS485 adapter adds its own latency.
            inter_frame_delay_s = max(0.005, 38.5 / cfg.baudrate) if cfg.transport == "rtu" else 0.0
        self._gap_s = inter_frame_delay_s
        self._lock = asyncio.Lock()
        self._client: _Client | None = None
        self._closed = False

    @property
    def name(self) -> str:
        if self._cfg.transport == "tcp":
            return f"tcp://{self._cfg.host}:{self._cfg.tcp_port}"
        return self._cfg.port

    async def read_blocks(
        self, *, unit_id: int, function: str, blocks: Sequence[Block]
    ) -> dict[int, int]:
        """Read ``blocks`` from one device; address -> 16-bit register value.

        All blocks are read under one hold of the bus lock, so that another
        meter's request cannot slip between them and the values belong to the
        same moment.  Raises MeterError on timeout, exception response or a
        connection that cannot be made.
        """
        if self._closed:
            raise MeterError(f"meter bus {self.name} is closed")
        words: dict[int, int] = {}
        async with self._lock:
            client = await self._connected()
            for block in blocks:
                try:
                    if function == "holding":
                        response = await client.read_holding_registers(
                            block.start, count=block.count, device_id=unit_id
                        )
                    else:
                        response = await client.read_input_registers(
                            block.start, count=block.count, device_id=unit_id
                        )
                except asyncio.CancelledError:
                    self._drop_client()  # an answer may still be on its way
                    raise
                except Exception as exc:  # TimeoutError, ModbusException, OSError, and any other
                    # A late answer must not be taken for the next request's: start over.
                    self._drop_client()
                    raise MeterError(
                        f"unit {unit_id} on {self.name}: no answer reading "
                        f"0x{block.start:04X}+{block.count} ({exc})"
                    ) from exc
                finally:
                    if self._gap_s:
                        await asyncio.sleep(self._gap_s)
                try:
                    failed = response.isError()
                    registers = [] if failed else list(response.registers)
                except Exception as exc:
                    raise MeterError(
                        f"unit {unit_id} on {self.name}: unreadable response {response!r} "
                        f"reading 0x{block.start:04X}+{block.count} ({exc})"
                    ) from exc
                if failed:
                    raise MeterError(
                        f"unit {unit_id} on {self.name}: exception response "
                        f"{response.exception_code} reading 0x{block.start:04X}+{block.count}"
                    )
                if len(registers) < block.count:
                    raise MeterError(
                        f"unit {unit_id} on {self.name}: {len(registers)} registers "
                        f"instead of {block.count} at 0x{block.start:04X}"
                    )
                for i in range(block.count):
                    words[block.start + i] = registers[i]
        return words

    async def close(self) -> None:
        """Release the serial port or socket; the bus cannot be used afterwards."""
        async with self._lock:
            self._closed = True
            self._drop_client()

    async def __aenter__(self) -> ModbusBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connected(self) -> _Client:
        try:
            client = self._client
            if client is None:
                client = self._client = self._new_client()
            ok = client.connected or await client.connect()
        except asyncio.CancelledError:
            self._drop_client()
            raise
        except Exception as exc:  # ModbusException, OSError, TypeError of a changed API...
            self._drop_client()
            raise MeterError(f"cannot open meter bus {self.name}: {exc}") from exc
        if not ok:
            self._drop_client()
            raise MeterError(f"cannot open meter bus {self.name}")
        return client

    def _new_client(self) -> _Client:
        cfg = self._cfg
        # reconnect_delay=0: no background reconnect task; the next request reconnects.
        if cfg.transport == "tcp":
            return AsyncModbusTcpClient(
                cfg.host,
                port=cfg.tcp_port,
                timeout=cfg.timeout_s,
                retries=self._retries,
                reconnect_delay=0,
                name=f"meter-bus {self.name}",
            )
        return AsyncModbusSerialClient(
            cfg.port,
            baudrate=cfg.baudrate,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            bytesize=8,
            timeout=cfg.timeout_s,
            retries=self._retries,
            reconnect_delay=0,
            name=f"meter-bus {self.name}",
        )

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("closing the Modbus client of %s failed", self.name, exc_info=True)


class ModbusMeter:
    """An energy meter of a known model at ``unit_id`` on a ModbusBus."""

    def __init__(self, bus: ModbusBus, *, model: str, unit_id: int) -> None:
        if not 1 <= unit_id <= 247:
            raise HardwareConfigError(f"meter unit id {unit_id} is not within 1..247")
        self._bus = bus
        self._map: RegisterMap = load_register_map(model)
        self._blocks = self._map.blocks()
        self._unit_id = unit_id
        self._last: MeterSample | None = None
        self._failing = False

    @property
    def model(self) -> str:
        return self._map.model

    @property
    def unit_id(self) -> int:
        return self._unit_id

    @property
    def last_sample(self) -> MeterSample | None:
        return self._last

    def faults(self) -> frozenset[Fault]:
        return frozenset({Fault.METER_FAILURE}) if self._failing else frozenset()

    async def read(self) -> MeterSample:
        """One reading of every register of the map.

        A reading whose energy register is not a number or is lower than the
        last good one is refused like a silent meter: the energy register feeds
        billing, and a glitch or a swapped meter must not end up in a
        transaction's meter values.
        """
        try:
            words = await self._bus.read_blocks(
                unit_id=self._unit_id, function=self._map.function, blocks=self._blocks
            )
            try:
                sample = self._map.decode(words)
            except Exception as exc:
                raise MeterError(
                    f"meter {self.model} unit {self._unit_id}: registers do not decode ({exc})"
                ) from exc
            self._check(sample)
        except MeterError as exc:
            self._fail(exc)
            raise
        if self._failing:
            self._failing = False
            log.info(
                "meter %s unit %s on %s answers again", self.model, self._unit_id, self._bus.name
            )
        self._last = sample
        return sample

    def _check(self, sample: MeterSample) -> None:
        energy = sample.energy_wh
        if not math.isfinite(energy) or energy < 0:
            raise MeterError(f"meter {self.model} unit {self._unit_id}: energy register {energy}")
        if self._last is not None and energy < self._last.energy_wh:
            raise MeterError(
                f"meter {self.model} unit {self._unit_id}: energy went back from "
                f"{self._last.energy_wh} Wh to {energy} Wh"
            )

    def _fail(self, exc: MeterError) -> None:
        if not self._failing:
            self._failing = True
            log.error("meter failure: %s", exc)
        else:
            log.debug("meter still failing: %s", exc)
