"""Hardware errors.  Each also inherits the built-in type a caller would expect."""

from __future__ import annotations

from hal.interfaces import Fault


class HardwareError(Exception):
    """Base of every hardware error; ``fault`` names the standing fault it raises."""

    fault: Fault | None = None


class ContactorError(HardwareError, RuntimeError):
    def __init__(self, message: str, fault: Fault) -> None:
        super().__init__(message)
        self.fault = fault


class LockError(HardwareError, RuntimeError):
    fault = Fault.LOCK_FAILURE


class ReaderError(HardwareError, OSError):
    fault = Fault.READER_FAILURE


class MeterError(HardwareError, OSError):
    fault = Fault.METER_FAILURE


class PilotError(HardwareError, OSError):
    fault = Fault.PILOT_FAILURE


class RcdError(HardwareError, RuntimeError):
    fault = Fault.RCD_FAILURE


class HardwareConfigError(HardwareError, ValueError):
    """A hardware configuration that cannot work (unknown meter model, pin clash...)."""


class NotSimulatedError(HardwareError, TypeError):
    """A bench (sim) control asked of real hardware."""
