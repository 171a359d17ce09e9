"""Figures of the bench: samples, their percentiles, the target, and the printed/JSON report.

A figure keeps every sample so that the report can show the spread (p50 / p99
/ max), not an average that hides the slow tail a CSMS team would notice.
Percentiles use the nearest-rank method: with 20 samples p99 is the maximum,
which is the honest reading of so few repetitions.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Target:
    """``judge`` (p99, max or min of the samples) compared with ``op`` to ``value``."""

    op: str  # "<", "<=" or ">="
    value: float
    judge: str = "p99"

    def text(self, unit: str) -> str:
        return f"{self.judge} {self.op} {self.value:g} {unit}"

    def met(self, stat: float) -> bool:
        if self.op == "<":
            return stat < self.value
        if self.op == "<=":
            return stat <= self.value
        if self.op == ">=":
            return stat >= self.value
        raise ValueError(f"unknown target operator {self.op!r}")


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    target: Target | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str | None = None  # why the figure could not be measured on this daemon
    error: str | None = None  # the phase failed; the run goes on with the other phases

    def add(self, value: float) -> None:
        self.samples.append(float(value))

    def stat(self, name: str) -> float | None:
        if not self.samples:
            return None
        if name == "p50":
            return percentile(self.samples, 50)
        if name == "p99":
            return percentile(self.samples, 99)
        if name == "max":
            return max(self.samples)
        if name == "min":
            return min(self.samples)
        if name == "mean":
            return sum(self.samples) / len(self.samples)
        raise ValueError(f"unknown statistic {name!r}")

    @property
    def result(self) -> str:
        if self.error:
            return "ERROR"
        if self.skipped:
            return "SKIP"
        if not self.samples:
            return "NO DATA"
        if self.target is None:
            return ""
        stat = self.stat(self.target.judge)
        assert stat is not None
        return "PASS" if self.target.met(stat) else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "n": len(self.samples),
            "p50": self.stat("p50"),
            "p99": self.stat("p99"),
            "max": self.stat("max"),
            "min": self.stat("min"),
            "mean": self.stat("mean"),
            "target": None
            if self.target is None
            else {"op": self.target.op, "value": self.target.value, "judge": self.target.judge},
            "result": self.result,
            "note": self.note,
            "skipped": self.skipped,
            "error": self.error,
        }


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    # x86 says "model name"; a Raspberry Pi says "Model" (the board) besides the core.
    cpu = fields.get("model name") or fields.get("model") or platform.machine()
    board = fields.get("model", "")
    if "raspberry" in board.lower() and board != cpu:
        cpu = f"{cpu} ({board})"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: list[Figure], header: dict[str, Any]) -> str:
    lines = [
        f"chargerd bench  {header['started']}  ({header['mode']} run, "
        f"{header['duration_s']:.0f} s)",
        f"machine: {header['machine']['cpu']}, {header['machine']['cores']} cores, "
        f"Python {header['machine']['python']}; load average {header['load_before']:.2f} "
        f"before, {header['load_after']:.2f} after",
        "",
    ]
    if max(header["load_before"], header["load_after"]) > 0.5 * (header["machine"]["cores"] or 1):
        lines[-1:-1] = [
            "WARNING: the machine was busy with other work during the run; the figures "
            "are pessimistic",
        ]
    cols = ("figure", "unit", "n", "p50", "p99", "max", "mean", "target", "result")
    rows = [cols]
    for fig in figures:
        rows.append(
            (
                fig.label,
                fig.unit,
                str(len(fig.samples)),
                _fmt(fig.stat("p50")),
                _fmt(fig.stat("p99")),
                _fmt(fig.stat("max")),
                _fmt(fig.stat("mean")),
                fig.target.text(fig.unit) if fig.target else "",
                fig.result,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    right = {2, 3, 4, 5, 6}
    for n, row in enumerate(rows):
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [(f.label, f.error or f.skipped or f.note) for f in figures]
    notes = [(label, text) for label, text in notes if text]
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  {label}: {text}" for label, text in notes)
    return "\n".join(lines)


def report_json(figures: list[Figure], header: dict[str, Any]) -> dict[str, Any]:
    return {**header, "figures": {f.key: f.as_json() for f in figures}}


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
