"""A bench CSMS: ``python -m chargerd.bench.csms`` or ``BenchCsms`` in a test."""

from chargerd.bench.csms.control import ControlClient, ControlServer
from chargerd.bench.csms.csms import BenchCsms, CsmsCallError, FrameRecord, Record

__all__ = ["BenchCsms", "ControlClient", "ControlServer", "CsmsCallError", "FrameRecord", "Record"]
