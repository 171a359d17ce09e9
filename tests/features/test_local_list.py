"""Local Auth List Management: SendLocalList / GetLocalListVersion on a real SQLite file,
through the router as the CSMS's frames arrive, and the list's place in authorization."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ocpp
import pytest
from jsonschema import Draft4Validator

from chargerd.features import local_list as local_list_mod
from chargerd.features.auth import AuthorizationCache, Authorizer
from chargerd.features.local_list import LocalAuthList, declare_keys
from chargerd.link.frames import InboundCall
from chargerd.link.router import Router
from chargerd.store import Store

from .conftest import make_config


def entries(n: int, *, start: int = 0, status: str = "Accepted", parent: str | None = None):
    out = []
    for i in range(start, start + n):
        info = {"status": status}
        if parent:
            info["parentIdTag"] = parent
        out.append({"idTag": f"TAG{i:05d}", "idTagInfo": info})
    return out


def build(store, *, max_length: int = 10_000, ocpp: dict | None = None):
    config = make_config(store)
    declare_keys(config, max_length=max_length)
    if ocpp:
        config.apply_initial(ocpp)
    lst = LocalAuthList(store, config)
    router = Router()
    router.register(lst)
    return config, lst, router


async def call(router: Router, action: str, payload: dict) -> dict:
    answer = await router.answer(InboundCall("u1", action, payload))
    frame = json.loads(answer.frame)
    assert frame[0] == 3, frame
    return frame[2]


async def send(router, version: int, kind: str, items: list | None) -> str:
    payload = {"listVersion": version, "updateType": kind}
    if items is not None:
        payload["localAuthorizationList"] = items
    return (await call(router, "SendLocalList", payload))["status"]


async def version(router) -> int:
    return (await call(router, "GetLocalListVersion", {}))["listVersion"]


async def test_version_is_0_when_empty_and_minus_1_when_disabled(store):
    config, lst, router = build(store)
    assert await version(router) == 0
    assert await send(router, 3, "Full", entries(2)) == "Accepted"
    assert await version(router) == 3
    config.set("LocalAuthListEnabled", "false")
    assert await version(router) == -1
    assert lst.get("TAG00000") is None  # a disabled list authorizes nobody
    assert await send(router, 4, "Full", entries(1)) == "NotSupported"
    config.set("LocalAuthListEnabled", "true")
    assert await version(router) == 3  # the list is kept while disabled
    assert await send(router, 5, "Full", []) == "Accepted"
    assert await version(router) == 0  # empty


async def test_full_replaces_and_differential_adds_changes_and_removes(store):
    _, lst, router = build(store)
    assert await send(router, 1, "Full", entries(3)) == "Accepted"
    diff = [
        {"idTag": "TAG00000"},  # no idTagInfo: removed
        {"idTag": "tag00001", "idTagInfo": {"status": "Blocked"}},  # changed (any case)
        {"idTag": "NEW", "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}},
    ]
    assert await send(router, 2, "Differential", diff) == "Accepted"
    assert lst.get("TAG00000") is None
    assert lst.get("TAG00001").status == "Blocked"
    assert lst.get("TAG00002").status == "Accepted"
    assert lst.get("new").parent_id_tag == "FLEET"
    assert await version(router) == 2
    assert await send(router, 7, "Full", entries(1, start=50)) == "Accepted"
    assert len(lst) == 1 and lst.get("TAG00050") is not None and lst.get("NEW") is None


async def test_differential_needs_a_newer_version(store):
    _, lst, router = build(store)
    assert await send(router, 5, "Full", entries(2)) == "Accepted"
    assert await send(router, 5, "Differential", entries(1, start=9)) == "VersionMismatch"
    assert await send(router, 4, "Differential", entries(1, start=9)) == "VersionMismatch"
    assert await send(router, 0, "Full", entries(1, start=9)) == "VersionMismatch"
    assert lst.get("TAG00009") is None and await version(router) == 5
    assert await send(router, 6, "Differential", entries(1, start=9)) == "Accepted"


@pytest.mark.parametrize(
    "items, why",
    [
        ([{"idTag": "A"}], "a Full entry without idTagInfo"),
        (entries(1) + entries(1), "an idTag listed twice"),
        ([{"idTag": "A", "idTagInfo": {"status": "Accepted", "expiryDate": "soon"}}], "bad date"),
    ],
)
async def test_malformed_full_update_fails_and_keeps_the_old_list(store, items, why):
    _, lst, router = build(store)
    assert await send(router, 1, "Full", entries(2)) == "Accepted"
    assert await send(router, 2, "Full", items) == "Failed", why
    assert len(lst) == 2 and await version(router) == 1


async def test_limits_send_and_list_max_length(store):
    config, lst, router = build(store, max_length=3)
    assert config.get("SendLocalListMaxLength") == 3
    assert config.get("LocalAuthListMaxLength") == 3
    assert config.set("LocalAuthListMaxLength", "50") == "Rejected"  # read-only
    assert await send(router, 1, "Full", entries(4)) == "Failed"
    assert await send(router, 1, "Full", entries(3)) == "Accepted"
    # A differential that would grow the list past its maximum changes nothing.
    assert await send(router, 2, "Differential", entries(1, start=10)) == "Failed"
    assert len(lst) == 3 and await version(router) == 1
    # Removing one makes room: the same update then fits.
    diff = [{"idTag": "TAG00000"}, *entries(1, start=10)]
    assert await send(router, 2, "Differential", diff) == "Accepted"
    assert len(lst) == 3


async def test_a_failure_in_the_middle_of_a_full_update_leaves_the_old_list_whole(
    store, monkeypatch
):
    _, lst, router = build(store)
    assert await send(router, 1, "Full", entries(100, status="Blocked")) == "Accepted"

    def boom(name: str) -> None:
        raise OSError("disk I/O error (injected half-way)")

    monkeypatch.setattr(local_list_mod, "_crash_point", boom)
    assert await send(router, 2, "Full", entries(1000)) == "Failed"
    assert len(lst) == 100 and await version(router) == 1
    assert all(lst.get(f"TAG{i:05d}").status == "Blocked" for i in range(100))


def test_a_kill_in_the_middle_of_a_full_update_leaves_the_old_list_whole(tmp_path):
    """A real SIGKILL inside the SQLite transaction, half-way through 10,000 rows."""
    db = tmp_path / "chargerd.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from tests.features.conftest import make_config
        from chargerd.features.local_list import LocalAuthList, declare_keys, parse_entries
        from chargerd.store import Store

        store = Store.open({str(db)!r})
        config = make_config(store)
        declare_keys(config)
        lst = LocalAuthList(store, config)
        def items(n, status):
            return [{{"id_tag": f"TAG{{i:05d}}", "id_tag_info": {{"status": status}}}}
                    for i in range(n)]
        if sys.argv[1] == "old":
            lst.apply(list_version=1, update_type="Full",
                      entries=parse_entries(items(3000, "Blocked"), full=True))
        else:
            lst.apply(list_version=2, update_type="Full",
                      entries=parse_entries(items(10000, "Accepted"), full=True))
            print("not killed")
        """
    )
    run = [sys.executable, "-c", script]
    assert subprocess.run([*run, "old"], timeout=60).returncode == 0
    env = {**os.environ, "CHARGERD_CRASH_POINT": "local_list.mid_update"}
    killed = subprocess.run([*run, "new"], env=env, timeout=60, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    with Store.open(db) as store:
        config = make_config(store)
        declare_keys(config)
        lst = LocalAuthList(store, config)
        assert lst.version() == 1 and len(lst) == 3000
        assert lst.get("TAG02999").status == "Blocked"
        assert lst.get("TAG05000") is None


async def test_the_list_survives_a_restart(tmp_path):
    with Store.open(tmp_path / "c.db") as store:
        _, _, router = build(store)
        assert await send(router, 9, "Full", entries(5, parent="P")) == "Accepted"
    with Store.open(tmp_path / "c.db") as store:
        _, lst, router = build(store)
        assert await version(router) == 9
        assert lst.get("TAG00004").parent_id_tag == "P"


# -- the list in authorization --------------------------------------------------------------


def authorizer_with_list(store, clock, link, ocpp: dict):
    config, lst, router = build(store, ocpp=ocpp)
    cache = AuthorizationCache(store, clock, config)
    cache.in_local_list = lst.contains
    return lst, router, cache, Authorizer(cache, link, config, clock, local_list=lst.get)


async def test_offline_the_list_authorizes_with_local_authorize_offline(store, clock, link):
    _lst, router, _cache, authorizer = authorizer_with_list(
        store, clock, link, {"LocalAuthorizeOffline": True, "AllowOfflineTxForUnknownId": False}
    )
    assert await send(router, 1, "Full", entries(1) + entries(1, start=1, status="Blocked")) == (
        "Accepted"
    )
    assert (await authorizer.authorize("TAG00000", online=False)).status == "Accepted"
    assert (await authorizer.authorize("TAG00001", online=False)).status == "Blocked"
    assert (await authorizer.authorize("UNKNOWN", online=False)).status == "Invalid"
    assert link.calls == []


async def test_online_the_list_preauthorizes_without_asking(store, clock, link):
    _lst, router, _cache, authorizer = authorizer_with_list(
        store, clock, link, {"LocalPreAuthorize": True}
    )
    assert await send(router, 1, "Full", entries(1, parent="FLEET")) == "Accepted"
    info = await authorizer.authorize("TAG00000", online=True)
    assert info.status == "Accepted" and info.parent_id_tag == "FLEET"
    assert link.calls == []


async def test_the_list_outranks_the_cache_and_the_cache_never_overwrites_it(store, clock, link):
    lst, router, cache, authorizer = authorizer_with_list(
        store, clock, link, {"LocalAuthorizeOffline": True}
    )
    cache.update("TAG00000", {"status": "Accepted"})
    assert await send(router, 1, "Full", entries(1, status="Blocked")) == "Accepted"
    assert (await authorizer.authorize("TAG00000", online=False)).status == "Blocked"
    # Online, without LocalPreAuthorize, the CSMS is asked; its answer is not cached
    # for a listed idTag, and the list entry stays as the operator sent it.
    link.answer("Authorize", {"idTagInfo": {"status": "Accepted"}})
    assert (await authorizer.authorize("TAG00000", online=True)).status == "Accepted"
    assert lst.get("TAG00000").status == "Blocked"
    cache.clear()
    cache.update("TAG00000", {"status": "Accepted"})
    assert cache.get("TAG00000") is None
    assert (await authorizer.authorize("TAG00000", online=False)).status == "Blocked"


def full_with(*items) -> dict:
    return {"listVersion": 1, "updateType": "Full", "localAuthorizationList": list(items)}


ACCEPTED = {"status": "Accepted"}


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"updateType": "Full"}, "ProtocolError"),
        ({"listVersion": "1", "updateType": "Full"}, "TypeConstraintViolation"),
        ({"listVersion": 1, "updateType": "Partial"}, "FormationViolation"),
        ({"listVersion": 1, "updateType": "Full", "extra": 1}, "FormationViolation"),
        ({**full_with(), "localAuthorizationList": {}}, "TypeConstraintViolation"),
        (full_with({"idTag": "X" * 21, "idTagInfo": ACCEPTED}), "TypeConstraintViolation"),
        (full_with({"idTag": "A", "idTagInfo": {"status": "Fine"}}), "FormationViolation"),
        (full_with({"idTagInfo": ACCEPTED}), "ProtocolError"),
        (full_with({"idTag": "A", "idTagInfo": {}}), "ProtocolError"),
        (full_with({"idTag": 5, "idTagInfo": ACCEPTED}), "TypeConstraintViolation"),
        (full_with({"idTag": "A", "idTagInfo": {**ACCEPTED, "c": 1}}), "FormationViolation"),
        (full_with({"idTag": "A", "idTagInfo": "Accepted"}), "TypeConstraintViolation"),
    ],
)
async def test_schema_violations_are_callerrors_and_change_nothing(store, payload, code):
    """The schema is checked by hand (for speed): the CALLERRORs must be the schema's."""
    schema = json.loads(
        (Path(ocpp.__file__).parent / "v16" / "schemas" / "SendLocalList.json").read_text()
    )
    assert list(Draft4Validator(schema).iter_errors(payload)), "the schema refuses it too"
    _, lst, router = build(store)
    assert await send(router, 1, "Full", entries(2)) == "Accepted"
    answer = await router.answer(InboundCall("u2", "SendLocalList", payload))
    frame = json.loads(answer.frame)
    assert frame[0] == 4 and frame[2] == code, frame
    assert len(lst) == 2 and await version(router) == 1


def test_the_routers_snake_case_is_ocpps():
    from ocpp.charge_point import camel_to_snake_case

    from chargerd.link.router import snake_case

    payload = {
        "listVersion": 1,
        "localAuthorizationList": [{"idTag": "A", "idTagInfo": {"parentIdTag": "P"}}],
        "csChargingProfiles": {"chargingSchedule": {"chargingRateUnit": "A"}},
        "ocppCSMSURL": "x",
        "n": [1, "two", None],
    }
    assert snake_case(payload) == camel_to_snake_case(payload)
