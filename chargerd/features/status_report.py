"""Publishing connector statuses: MinimumStatusDuration, connector 0, re-send after reconnect.

The supervisor recomputes every connector's status on each pass and hands it
here; the pure StatusReporter decides what goes out and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chargerd.clock import Clock
from chargerd.features.status import StatusReporter


class StatusPublisher:
    def __init__(
        self,
        *,
        clock: Clock,
        config,
        send: Callable[[int, str, str], None],
        station: Callable[[], tuple[str, str]],
    ) -> None:
        self._clock = clock
        self._config = config
        self._send = send
        self._station = station
        self.reporter = StatusReporter()

    def _observe(self, connector_id: int, status: str, error_code: str) -> None:
        self.reporter.minimum_duration_s = float(self._config.get("MinimumStatusDuration") or 0)
        report = self.reporter.observe(
            connector_id, status, error_code, now=self._clock.monotonic()
        )
        if report is not None:
            self._send(report.connector_id, str(report.status), str(report.error_code))

    def report(self, connector_id: int, status: str, error_code: str) -> None:
        """A connector's current status (called on every supervisor pass)."""
        self._observe(connector_id, status, error_code)
        station_status, station_code = self._station()
        self._observe(0, str(station_status), str(station_code))

    def current(self) -> list[tuple[int, str, str]]:
        """Every connector's last status, to send again after a (re)connect."""
        return [
            (r.connector_id, str(r.status), str(r.error_code))
            for r in self.reporter.pending_after_reconnect()
        ]

    async def run(self) -> None:
        while True:
            for report in self.reporter.due(now=self._clock.monotonic()):
                self._send(report.connector_id, str(report.status), str(report.error_code))
            await asyncio.sleep(0.25)
