"""chargerctl status shows the station certificate's expiry and the installed roots."""

from __future__ import annotations

from tests.control.test_cli import STATUS, returning, run


def test_status_human_shows_the_certificates(serve, sock_path, capsys) -> None:
    status = {
        **STATUS,
        "certificates": {
            "station_certificate_expiry": "2027-01-01T00:00:00+00:00",
            "csms_roots": 1,
            "manufacturer_roots": 2,
        },
    }
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "certificates: station valid until 2027-01-01T00:00:00+00:00, 1 CSMS root(s),"
        " 2 manufacturer root(s)"
    )


def test_status_human_without_a_station_certificate(serve, sock_path, capsys) -> None:
    status = {
        **STATUS,
        "certificates": {
            "station_certificate_expiry": None,
            "csms_roots": 0,
            "manufacturer_roots": 0,
        },
    }
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "certificates: station none, 0 CSMS root(s), 0 manufacturer root(s)"
    )
