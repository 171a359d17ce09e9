"""chargerctl status: the firmware line (kept apart from cli.py, which many areas share)."""

from __future__ import annotations

from typing import Any


def firmware_lines(status: dict[str, Any]) -> list[str]:
    """``firmware: 0.1.0  update Downloading (attempt 2, from http://...)`` or ``... idle``."""
    fw = status.get("firmware")
    if not isinstance(fw, dict):
        return []
    line = f"firmware: {fw.get('version', '?')}"
    phase = fw.get("phase")
    if phase is None:
        return [line + "  no update"]
    last = fw.get("last_status") or "accepted"
    if phase == "scheduled":
        line += f"  update scheduled for {fw.get('retrieve_date', '?')}"
    elif phase == "done":
        line += f"  last update: {last}"
    else:
        line += f"  update {last}"
        if phase == "downloading" and fw.get("attempt"):
            line += f" (attempt {fw['attempt']})"
    if fw.get("location"):
        line += f"  from {fw['location']}"
    if fw.get("error"):
        line += f"  error: {fw['error']}"
    return [line]
