"""The simulated station: all six devices on a laptop, driven by a bench or a test.

``open_mock_station(cfg, state_dir, connectors=n)`` gives the daemon a
StationHardware like the Pi driver's; its ``sim`` is the MockStation whose
controls (plug, charge, suspend, unplug, present_card, fault, snapshot) play
the car, the cable, the card and the faults.
"""

from hal.mock.devices import (
    MockCableLock,
    MockContactor,
    MockEnergyMeter,
    MockIndicator,
    MockPilot,
    MockRfidReader,
)
from hal.mock.station import FAULT_NAMES, MockConnector, MockStation, open_mock_station

__all__ = [
    "FAULT_NAMES",
    "MockCableLock",
    "MockConnector",
    "MockContactor",
    "MockEnergyMeter",
    "MockIndicator",
    "MockPilot",
    "MockRfidReader",
    "MockStation",
    "open_mock_station",
]
