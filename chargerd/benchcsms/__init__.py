"""A bench CSMS: ``python -m chargerd.benchcsms`` or ``BenchCsms`` in a test."""

from chargerd.benchcsms.csms import BenchCsms, CsmsCallError, FrameRecord, Record

__all__ = ["BenchCsms", "CsmsCallError", "FrameRecord", "Record"]
