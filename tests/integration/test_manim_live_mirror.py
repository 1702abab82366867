"""The worker's mirror of a task's live segments (appliance/runtime/executors/live_mirror.py) against what a hostile
task can write in its own ``live/`` folder: links, FIFOs, huge or growing files, junk names, a forged index. The
host side gets only plain files the index lists, of bounded size, and an index rebuilt from checked fields; the
mirror never blocks, never follows a link, and never fails the task. Driven on real folders, as the worker does
(a task filesystem's descriptor and the host workdir's)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.runtime.executors import live_mirror
from appliance.runtime.executors.live_mirror import LiveMirror


def index(segments: int, **extra: object) -> dict:
    return {"fps": 10, "codec": "avc1.64000b", "init": "init.mp4", "done": False,
            "segments": [{"name": f"seg{i:05d}.m4s", "frames": 10, "address": "ab" * 16, "ms": 5}
                         for i in range(segments)], **extra}


class Folders:
    def __init__(self, root: Path) -> None:
        self.task, self.host = root / "task", root / "host"
        self.live = self.task / "live"
        self.live.mkdir(parents=True)
        self.host.mkdir()
        self.task_fd = os.open(self.task, os.O_RDONLY | os.O_DIRECTORY)
        self.host_fd = os.open(self.host, os.O_RDONLY | os.O_DIRECTORY)
        self.mirror = LiveMirror()

    def write(self, segments: int, **extra: object) -> None:
        (self.live / "init.mp4").write_bytes(b"init")
        for i in range(segments):
            path = self.live / f"seg{i:05d}.m4s"
            if not path.exists() and not path.is_symlink():
                path.write_bytes(b"segment %d" % i)
        (self.live / "index.json").write_text(json.dumps(index(segments, **extra)))

    def tick(self) -> None:
        self.mirror.tick(self.task_fd, self.host_fd)

    def mirrored(self) -> list[str]:
        folder = self.host / "live"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def host_index(self) -> dict:
        return json.loads((self.host / "live" / "index.json").read_text())


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Folders]:
    got = Folders(tmp_path)
    yield got
    os.close(got.task_fd)
    os.close(got.host_fd)


def test_segments_are_mirrored_as_the_index_grows(folders: Folders) -> None:
    folders.tick()
    assert folders.mirrored() == []  # nothing yet
    folders.write(2)
    folders.tick()
    assert folders.mirrored() == ["index.json", "init.mp4", "seg00000.m4s", "seg00001.m4s"]
    folders.write(3, done=True, extra="x" * 100)
    folders.tick()
    got = folders.host_index()
    assert [s["name"] for s in got["segments"]] == ["seg00000.m4s", "seg00001.m4s", "seg00002.m4s"]
    assert [s["start"] for s in got["segments"]] == [0, 10, 20] and got["done"] is True
    assert "extra" not in got  # rebuilt from checked fields, not copied
    assert (folders.host / "live" / "seg00002.m4s").read_bytes() == b"segment 2"
    assert folders.mirror.stopped is None


def test_a_link_anywhere_is_never_followed(folders: Folders, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host data")
    folders.write(1)
    (folders.live / "seg00001.m4s").symlink_to(secret)
    (folders.live / "index.json").write_text(json.dumps(index(2)))
    folders.tick()
    assert "link" in folders.mirror.stopped
    assert not (folders.host / "live" / "seg00001.m4s").exists()
    assert "host data" not in "".join(p.read_text(errors="replace") for p in (folders.host / "live").iterdir())

    # the live folder itself a link (to a folder of the host's): refused before anything is read through it
    other = Folders(tmp_path / "other")
    os.rmdir(other.live)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.json").write_text(json.dumps(index(0)))
    (outside / "init.mp4").write_text("host file")
    other.live.symlink_to(outside)
    other.tick()
    assert other.mirrored() == [] and "not a folder" in other.mirror.stopped

    # the index a link
    third = Folders(tmp_path / "third")
    third.write(1)
    (third.live / "index.json").unlink()
    (third.live / "index.json").symlink_to(secret)
    third.tick()
    assert third.mirrored() == [] and third.mirror.stopped


def test_a_fifo_does_not_block_and_is_refused(folders: Folders) -> None:
    folders.write(0)
    os.mkfifo(folders.live / "seg00000.m4s")
    (folders.live / "index.json").write_text(json.dumps(index(1)))
    folders.tick()  # O_NONBLOCK: returns at once
    assert "not a regular file" in folders.mirror.stopped
    assert "seg00000.m4s" not in folders.mirrored()


def test_huge_files_and_budgets(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    folders.write(1)
    with open(folders.live / "seg00001.m4s", "wb") as fh:
        fh.truncate(live_mirror.MAX_FILE + 1)  # sparse: no disk used
    (folders.live / "index.json").write_text(json.dumps(index(2)))
    folders.tick()
    assert "over" in folders.mirror.stopped
    assert "seg00001.m4s" not in folders.mirrored()

    # all files together: the budget counts bytes read
    monkeypatch.setattr(live_mirror, "MAX_TOTAL", 30)
    again = Folders(folders.task.parent / "again")
    again.write(5)
    again.tick()
    assert again.mirror.stopped and sum(p.stat().st_size for p in (again.host / "live").iterdir()
                                        if p.name != "index.json") <= 30

    # an index too large to read
    big = Folders(folders.task.parent / "big")
    big.write(0)
    (big.live / "index.json").write_bytes(b" " * (live_mirror.MAX_INDEX + 1))
    big.tick()
    assert big.mirror.stopped and big.mirrored() == []


@pytest.mark.parametrize("forged", [
    b"not json", b"[]", b'{"segments": "x"}',
    json.dumps({**index(1), "init": "../../etc/passwd"}).encode(),
    json.dumps({**index(1), "segments": [{"name": "../index.json", "frames": 1, "ms": 0, "address": None}]}).encode(),
    json.dumps({**index(1), "segments": [{"name": "seg00003.m4s", "frames": 1, "ms": 0, "address": None}]}).encode(),
    json.dumps({**index(1), "codec": 'avc1.64000b"><script>'}).encode(),
    json.dumps({**index(1), "fps": 0}).encode(),
    json.dumps({**index(1), "segments": [{"name": "seg00000.m4s", "frames": -1, "ms": 0, "address": None}]}).encode(),
    json.dumps({**index(1), "segments": [{"name": "seg00000.m4s", "frames": 1, "ms": 0,
                                          "address": "../x"}]}).encode(),
    json.dumps(index(live_mirror.MAX_SEGMENTS + 1)).encode(),
], ids=["junk", "list", "segments", "init path", "segment path", "gap", "codec", "fps", "frames", "address",
        "too many"])
def test_a_forged_index_gives_nothing(folders: Folders, forged: bytes) -> None:
    folders.write(1)
    (folders.live / "index.json").write_bytes(forged)
    folders.tick()
    assert folders.mirror.stopped and folders.mirrored() == []


def test_junk_the_index_does_not_name_stays_inside(folders: Folders) -> None:
    folders.write(1)
    for name in ("seg00007.m4s", "video.mp4", ".hidden", "seg00000.m4s.tmp"):
        (folders.live / name).write_bytes(b"junk")
    os.mkdir(folders.live / "sub")
    folders.tick()
    assert folders.mirrored() == ["index.json", "init.mp4", "seg00000.m4s"]
