"""A fake Eastron meter served by a real pymodbus server, and a null-modem cable.

``FakeMeter`` holds the meter's quantities as floats at their register
addresses; a pymodbus server (TCP on 127.0.0.1 or RTU on a serial device)
answers from them, so the driver under test speaks real Modbus frames.
``PtyCable`` joins two pseudo-terminals like an RS485 line (or a cut one),
so that RTU runs without hardware or socat.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import tty

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

REGISTERS = 0x0100  # the fake meter answers 0x0000..0x00FF, like a real one reading 0 there


class FakeMeter:
    """A meter at ``unit_id`` whose float32 input registers the test sets."""

    def __init__(self, unit_id: int = 1, values: dict[int, float] | None = None) -> None:
        self.unit_id = unit_id
        self.values: dict[int, float] = dict(values or {})
        self.busy = False  # answer every request with exception 6 (device busy)
        self.requests: list[tuple[int, int, int]] = []  # (function, address, count)

    def set(self, address: int, value: float) -> None:
        self.values[address] = value

    def device(self) -> SimDevice:
        return SimDevice(
            id=self.unit_id,
            simdata=[SimData(0, values=[0] * REGISTERS, datatype=DataType.REGISTERS)],
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests.append((function_code, address, count))
        if self.busy:
            return ExcCodes.DEVICE_BUSY
        for reg, value in self.values.items():
            hi, lo = struct.unpack(">HH", struct.pack(">f", value))
            registers[reg - start_address] = hi
            registers[reg - start_address + 1] = lo
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_tcp_server(meters: list[FakeMeter], port: int) -> ModbusTcpServer:
    server = ModbusTcpServer([m.device() for m in meters], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


async def start_rtu_server(meters: list[FakeMeter], port: str) -> ModbusSerialServer:
    server = ModbusSerialServer(
        [m.device() for m in meters], framer=FramerType.RTU, port=port, baudrate=9600
    )
    await server.serve_forever(background=True)
    return server


class PtyCable:
    """Two serial device paths joined like a two-wire bus; ``cut()`` unplugs it."""

    def __init__(self) -> None:
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: list[str] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or line editing before pyserial opens it
            self._masters.append(master)
            self._slaves.append(slave)  # held open: a master reads EIO once no slave is open
            self.paths.append(os.ttyname(slave))
        self.connected = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-cable", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self.connected = False

    def mend(self) -> None:
        self.connected = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in self._masters + self._slaves:
            os.close(fd)

    def _relay(self) -> None:
        a, b = self._masters
        other = {a: b, b: a}
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.02)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if self.connected and data:
                    os.write(other[fd], data)
