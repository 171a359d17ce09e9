"""chargerctl status: the firmware line."""

from chargerd.control.firmware_text import firmware_lines


def test_firmware_lines() -> None:
    assert firmware_lines({}) == []
    assert firmware_lines({"firmware": {"version": "0.1.0", "status": "Idle"}}) == [
        "firmware: 0.1.0  no update"
    ]
    line = firmware_lines(
        {
            "firmware": {
                "version": "0.1.0",
                "phase": "downloading",
                "last_status": "Downloading",
                "attempt": 2,
                "location": "ftp://u:***@h/fw.bin",
                "error": "connection refused",
            }
        }
    )[0]
    assert line == (
        "firmware: 0.1.0  update Downloading (attempt 2)  from ftp://u:***@h/fw.bin"
        "  error: connection refused"
    )
    done = firmware_lines(
        {"firmware": {"version": "2.0", "phase": "done", "last_status": "Installed"}}
    )
    assert done == ["firmware: 2.0  last update: Installed"]
