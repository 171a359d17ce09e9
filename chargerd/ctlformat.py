"""chargerctl's text: the daemon's JSON answers as the lines a technician reads.

Kept apart from the command line itself (chargerd.cli) so that each stays short; like it,
stdlib only, so that chargerctl starts fast on a Pi.
"""

from __future__ import annotations

import json
from typing import Any

from chargerd.control.uploads_text import upload_lines


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: Any, fmt: str, unit: str = "", scale: float = 1.0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value / scale:{fmt}}{unit}"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _duration(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _phases(values: Any, fmt: str, unit: str) -> str:
    items = _as_list(values)
    if not items:
        return "-"
    return "/".join(_num(v, fmt) for v in items) + unit


def _dump(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _limit_lines(status: dict[str, Any]) -> list[str]:
    """One line per connector with a smart-charging limit: its value and where it comes from."""
    out = []
    for c in _as_list(status.get("connectors")):
        if isinstance(c, dict) and "limit_a" in c:
            out.append(
                f"limit connector {_text(c.get('id'))}: {_num(c.get('limit_a'), '.1f', ' A')}"
                f" ({_text(c.get('limit_source'))})"
            )
    return out


def format_status(status: dict[str, Any]) -> list[str]:
    """The human status: station line, one table row per connector, faults, OCPP link."""
    lines: list[str] = []
    st = _as_dict(status.get("station"))
    hw = st.get("hardware")
    lines.append(
        f"{_text(st.get('charge_point_id'))}  {_text(st.get('vendor'))} {_text(st.get('model'))}"
        f"  fw {_text(st.get('firmware_version'))}"
        f"  ({_text(hw)} hardware, up {_duration(st.get('uptime_s'))})"
    )
    rows = [["CONN", "STATUS", "EV", "CONTACTOR", "LOCK", "OFFERED", "POWER", "ENERGY"]]
    rows[0] += ["TX", "ID TAG", "ERROR"]
    for c in _as_list(status.get("connectors")):
        if not isinstance(c, dict):
            continue
        locked = c.get("locked")
        closed = c.get("contactor_closed")
        error_code = c.get("error_code")
        rows.append(
            [
                _text(c.get("id")),
                _text(c.get("status")),
                _text(c.get("ev_state")),
                "-" if closed is None else ("closed" if closed else "open"),
                "-" if locked is None else ("locked" if locked else "unlocked"),
                _num(c.get("offered_current_a"), ".1f", " A"),
                _num(c.get("power_w"), ".2f", " kW", 1000),
                _num(c.get("energy_wh"), ".3f", " kWh", 1000),
                _tx_cell(c),
                _text(c.get("id_tag")),
                "-" if error_code in (None, "NoError") else str(error_code),
            ]
        )
    lines += _table(rows)
    lines += _limit_lines(status)

    faults = []
    for f in _as_list(status.get("faults")):
        if isinstance(f, dict):
            where = f.get("connector")
            place = "station" if not where else f"connector {where}"
            faults.append(f"{place}: {_text(f.get('fault'))}")
    station_faults = {f.get("fault") for f in _as_list(status.get("faults")) if isinstance(f, dict)}
    for f in _as_list(_as_dict(status.get("reader")).get("faults")):
        if f not in station_faults:
            faults.append(f"reader: {f}")
    lines.append("faults: " + ("; ".join(faults) if faults else "none"))

    oc = _as_dict(status.get("ocpp"))
    connected = oc.get("connected")
    link = "link unknown" if connected is None else "connected" if connected else "disconnected"
    lines.append(
        f"ocpp: {_text(oc.get('csms_url'))}  {link}"
        f"  registration {_text(oc.get('registration'))}"
        f"  outbox {_text(oc.get('outbox_pending'))}"
        f"  last heartbeat {_text(oc.get('last_heartbeat'))}"
        + (
            f"  security profile {oc['security_profile']}"
            if oc.get("security_profile") is not None
            else ""
        )
    )
    lines += _reservation_lines(status)
    lines += upload_lines(status)
    lines += _certificate_lines(status)
    from chargerd.control.firmware_text import firmware_lines

    lines += firmware_lines(status)
    return lines


def _certificate_lines(status: dict[str, Any]) -> list[str]:
    """The station certificate's expiry and the installed roots, when the daemon has them."""
    certs = status.get("certificates")
    if not isinstance(certs, dict):
        return []
    expiry = certs.get("station_certificate_expiry")
    return [
        f"certificates: station {'none' if expiry is None else 'valid until ' + _text(expiry)},"
        f" {_text(certs.get('csms_roots'))} CSMS root(s),"
        f" {_text(certs.get('manufacturer_roots'))} manufacturer root(s)"
    ]


def _reservation_lines(status: dict[str, Any]) -> list[str]:
    """Reservations (per connector, 0 = any) and the Local Auth List, when the daemon has them."""
    lines: list[str] = []
    if "reservations" in status:
        held = [
            f"#{_text(r.get('reservation_id'))} connector {_text(r.get('connector_id'))}"
            f" for {_text(r.get('id_tag'))} until {_text(r.get('expiry_date'))}"
            for r in _as_list(status.get("reservations"))
            if isinstance(r, dict)
        ]
        lines.append("reservations: " + ("; ".join(held) if held else "none"))
    lst = status.get("local_list")
    if isinstance(lst, dict):
        state = "" if lst.get("enabled", True) else " (disabled)"
        lines.append(
            f"local list: version {_text(lst.get('version'))},"
            f" {_text(lst.get('entries'))} entries{state}"
        )
    return lines


def _tx_cell(c: dict[str, Any]) -> str:
    """The CSMS's transactionId; the station's local id until the CSMS's is known."""
    if c.get("transaction_id") is not None:
        return _text(c.get("transaction_id"))
    local = c.get("transaction_local_id")
    return f"local {local}" if local is not None else "-"


_METER_HEADER = ["CONN", "ENERGY", "POWER", "VOLTAGE", "CURRENT", "FREQUENCY", "FAULTS"]


def _meter_row(c: dict[str, Any]) -> list[str]:
    faults = [str(f) for f in _as_list(c.get("faults"))]
    return [
        _text(c.get("id")),
        _num(c.get("energy_wh"), ".3f", " kWh", 1000),
        _num(c.get("power_w"), ".2f", " kW", 1000),
        _phases(c.get("voltage_v"), ".1f", " V"),
        _phases(c.get("current_a"), ".1f", " A"),
        _num(c.get("frequency_hz"), ".2f", " Hz"),
        ", ".join(faults) if faults else "-",
    ]


def _log_line(frame: dict[str, Any]) -> str:
    arrow = {"out": ">>", "in": "<<"}.get(frame.get("direction"), "??")
    return f"{_text(frame.get('time'))}  {arrow}  {_text(frame.get('frame'))}"
