"""Whatever the Modbus library does, a meter shows only as a meter fault.

pymodbus changes its API in minor releases (``slave=`` became ``device_id=`` in
3.10): pyproject.toml pins the tested minor release, and a client that raises
anything at all (a TypeError of a changed keyword, a RuntimeError of a bug, a
response without registers) is a MeterError and METER_FAILURE, never an
exception that would end the daemon's meter task.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from hal.config import MeterBusConfig
from hal.errors import MeterError
from hal.interfaces import Fault
from hal.pi import meter as meter_mod
from hal.pi.meter import ModbusBus, ModbusMeter

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_pymodbus_takes_the_keyword_the_driver_uses():
    source = inspect.getsource(meter_mod.ModbusBus.read_blocks)
    assert "device_id=unit_id" in source
    for client in (AsyncModbusTcpClient, AsyncModbusSerialClient):
        for method in (client.read_holding_registers, client.read_input_registers):
            assert "device_id" in inspect.signature(method).parameters


def test_the_pin_excludes_pymodbus_releases_without_device_id():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("pymodbus")]
    low = re.search(r">=\s*(\d+)\.(\d+)", spec)
    assert low and (int(low[1]), int(low[2])) >= (3, 10), spec
    assert re.search(r"<\s*3\.\d+", spec), f"{spec}: pin the minor release (API changes in Y)"


class Response:
    def __init__(self, registers=None, error=False) -> None:
        if registers is not None:
            self.registers = registers
        self._error = error
        self.exception_code = 4

    def isError(self) -> bool:  # pymodbus' name
        return self._error


class FakeClient:
    """Stands in for the pymodbus client: ``behaviour`` decides what a read does."""

    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour
        self.connected = False
        self.closed = 0

    async def connect(self) -> bool:
        self.connected = True
        return True

    async def read_input_registers(self, address, *, count, device_id):
        return self.behaviour(address, count)

    read_holding_registers = read_input_registers

    def close(self) -> None:
        self.closed += 1


def make_meter(monkeypatch, behaviour=None, new_client=None) -> ModbusMeter:
    bus = ModbusBus(MeterBusConfig(transport="tcp", tcp_port=9), inter_frame_delay_s=0.0)
    monkeypatch.setattr(bus, "_new_client", new_client or (lambda: FakeClient(behaviour)))
    return ModbusMeter(bus, model="sdm630", unit_id=1)


def raising(exc):
    def behaviour(address, count):
        raise exc

    return behaviour


@pytest.mark.parametrize(
    "behaviour",
    [
        raising(TypeError("read_input_registers() got an unexpected keyword 'device_id'")),
        raising(RuntimeError("pymodbus internal state")),
        raising(ValueError("bad frame")),
        raising(AttributeError("'NoneType' object has no attribute 'transport'")),
        lambda address, count: Response(),  # no registers at all
        lambda address, count: None,  # not even a response
        lambda address, count: Response(registers=[0] * (count - 1)),  # short
        lambda address, count: Response(error=True),
    ],
)
async def test_any_library_failure_is_a_meter_error_and_a_meter_fault(monkeypatch, behaviour):
    meter = make_meter(monkeypatch, behaviour)
    with pytest.raises(MeterError):
        await meter.read()
    assert meter.faults() == frozenset({Fault.METER_FAILURE})


async def test_a_client_that_cannot_even_be_built_is_a_meter_fault(monkeypatch):
    def new_client():
        raise TypeError("__init__() got an unexpected keyword argument 'reconnect_delay'")

    meter = make_meter(monkeypatch, new_client=new_client)
    with pytest.raises(MeterError, match="cannot open meter bus"):
        await meter.read()
    assert meter.faults() == frozenset({Fault.METER_FAILURE})


async def test_registers_that_do_not_decode_are_a_meter_fault(monkeypatch):
    meter = make_meter(monkeypatch, lambda address, count: Response(registers=["x"] * count))
    with pytest.raises(MeterError):
        await meter.read()
    assert meter.faults() == frozenset({Fault.METER_FAILURE})
