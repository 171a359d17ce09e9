"""chargerctl's human lines for the diagnostics and log uploads (GetDiagnostics, GetLog)."""

from __future__ import annotations

from typing import Any


def upload_lines(status: dict[str, Any]) -> list[str]:
    """One line per upload the CSMS asked for since the start, e.g.
    ``diagnostics upload: Uploading CP-1-diagnostics-....tar.gz (attempt 2 of 3) to http://...``."""
    uploads = status.get("uploads")
    if not isinstance(uploads, dict):
        return []
    lines = []
    for label, key in (("diagnostics upload", "diagnostics"), ("log upload", "log")):
        job = uploads.get(key)
        if not isinstance(job, dict):
            continue
        kind = "" if key == "diagnostics" else f" {job.get('kind')} #{job.get('request_id')}"
        line = (
            f"{label}:{kind} {job.get('state')} {job.get('file')}"
            f" (attempt {job.get('attempts')} of {job.get('max_attempts')})"
            f" to {job.get('location')}"
        )
        if job.get("error") and job.get("state") != "Uploaded":
            line += f"  last error: {job.get('error')}"
        lines.append(line)
    return lines
