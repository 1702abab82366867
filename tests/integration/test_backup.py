"""`appliance backup` while the server serves, `appliance restore` into a new data dir, a new server there."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import cli


@pytest.fixture
def studio(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "alice", "--credits", "321")
    server.cli("users", "create", "bob")
    server.cli("credits", "grant", "--user", "bob", "17", "--bucket", "free")
    server.keys = {"kodisc": server.new_key("alice", "kodisc")["key"],
                   "viralsync": server.new_key("bob", "viralsync")["key"]}
    server.done = [server.wait(server.submit(user, "test.noop")) for user in ("alice", "bob", "alice")]
    server.failed = server.wait(server.submit("bob", "test.fail", {"message": "nope"}))
    return server


def test_round_trip_while_serving(studio, make_server, tmp_path):
    running = studio.submit("alice", "test.sleep", {"seconds": 2})  # the server is busy while it is backed up
    dest = tmp_path / "backup"
    out = studio.cli("backup", str(dest))
    assert "backed up" in out and (dest / "manifest.json").is_file() and (dest / "appliance.db").is_file()
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {f"outputs/{j['id']}/out.txt" for j in studio.done} <= {f["path"] for f in manifest["files"]}
    assert not any(f["path"].startswith(("work/", "tmp/")) for f in manifest["files"])
    studio.wait(running)

    new_dir = tmp_path / "restored"
    assert "restored" in cli(new_dir, "restore", str(dest))
    restored = make_server(data_dir=new_dir)
    for job in [*studio.done, studio.failed]:
        again = restored.job(job["id"])
        assert {k: again[k] for k in ("status", "result", "error", "createdAt")} == \
               {k: job[k] for k in ("status", "result", "error", "createdAt")}
        assert again["tasks"][0]["log"].startswith(str(new_dir)), again["tasks"][0]["log"]
    for job in studio.done:
        old = httpx.get(f"{studio.url}/outputs/{job['id']}/out.txt")
        new = httpx.get(f"{restored.url}/outputs/{job['id']}/out.txt")
        assert new.status_code == 200 and new.content == old.content
        assert (new_dir / "outputs" / job["id"] / "out.txt").read_bytes() == \
               (studio.data_dir / "outputs" / job["id"] / "out.txt").read_bytes()
    kodisc = httpx.get(f"{restored.url}/api/v2/me", headers={"Authorization": f"Bearer {studio.keys['kodisc']}"})
    assert kodisc.status_code == 200
    assert kodisc.json() == httpx.get(f"{studio.url}/api/v2/me",
                                      headers={"Authorization": f"Bearer {studio.keys['kodisc']}"}).json()
    assert httpx.get(f"{restored.url}/v1/me", headers={"x-api-key": studio.keys["viralsync"]}).status_code == 200
    assert restored.cli("users", "list") == studio.cli("users", "list")  # names, ids, plans and balances
    assert " 17 (free " in restored.cli("users", "list")  # the CREDITS column
    assert restored.wait(restored.submit("bob", "test.noop"))["status"] == "completed"  # and it still works


def test_restore_refuses_a_live_or_non_empty_data_dir_and_backup_a_non_empty_dest(studio, tmp_path):
    dest = tmp_path / "backup"
    studio.cli("backup", str(dest))
    with pytest.raises(AssertionError, match="not an empty directory"):
        studio.cli("backup", str(dest))
    with pytest.raises(AssertionError, match="in use by the appliance server"):
        cli(studio.data_dir, "restore", str(dest))
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(AssertionError, match="is not empty"):
        cli(used, "restore", str(dest))
    with pytest.raises(AssertionError, match="not a finished backup"):
        cli(tmp_path / "fresh", "restore", str(tmp_path))


def test_a_damaged_backup_is_refused(studio, tmp_path):
    dest = tmp_path / "backup"
    studio.cli("backup", str(dest))
    victim = dest / "outputs" / studio.done[0]["id"] / "out.txt"
    victim.unlink()  # a hard link: replace it rather than write through to the live output
    victim.write_text("tampered\n")
    with pytest.raises(AssertionError, match="does not match the backup's manifest"):
        cli(tmp_path / "fresh", "restore", str(dest))
