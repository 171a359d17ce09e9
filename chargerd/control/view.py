"""What the control commands read of the daemon, as a Protocol: no import of daemon.py.

daemon.py builds the commands and hands itself over; the commands only need
its configuration and services.  Typing them against this view instead of
the Daemon class keeps the import graph one-way (daemon -> control).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chargerd.clock import Clock
    from chargerd.config import Config
    from chargerd.features.boot import BootService
    from chargerd.features.cards import CardService
    from chargerd.features.configuration import ConfigurationService
    from chargerd.features.connectors import ConnectorSupervisor
    from chargerd.features.outbox import Outbox
    from chargerd.link import FrameLog, Link
    from hal.interfaces import StationHardware


class DaemonView(Protocol):
    """The daemon's parts a command may use (extend it with what a new command needs)."""

    cfg: Config
    clock: Clock
    started_at: float
    config: ConfigurationService
    supervisor: ConnectorSupervisor
    hardware: StationHardware
    link: Link
    boot: BootService
    outbox: Outbox
    cards: CardService
    frame_log: FrameLog
