"""runtime/intake.copy_fd, the one copy of what a task wrote (out of its filesystem, into the server's staging):
holes stay holes, data is byte for byte, on the filesystems the box has (ext4 here; a memfd; tmpfs)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.runtime.intake import COPY_CHUNK, copy_fd


def _copy(src: Path, dest: Path) -> os.stat_result:
    s = os.open(src, os.O_RDONLY)
    d = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        copy_fd(s, d)
        return os.fstat(d)
    finally:
        os.close(s)
        os.close(d)


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_a_sparse_file_is_copied_hole_for_hole(tmp_path, where):
    """A hostile task's 2 GB ``ftruncate`` with a few bytes of data: the copy costs those blocks, not 2 GB."""
    base = tmp_path if where == "tmp" else Path("/dev/shm")
    if not base.is_dir():
        pytest.skip("no /dev/shm")
    src = base / f"sparse-{os.getpid()}"
    try:
        with open(src, "wb") as f:
            f.write(b"head")
            f.seek(1 << 30)
            f.write(b"middle" * 1000)
            f.truncate(2 << 30)  # a hole to the end
        copied = _copy(src, tmp_path / "copy")
        assert copied.st_size == 2 << 30 and copied.st_blocks * 512 <= 1 << 20, copied
        with open(tmp_path / "copy", "rb") as f:
            assert f.read(4) == b"head"
            f.seek(1 << 30)
            assert f.read(6000) == b"middle" * 1000
            f.seek((2 << 30) - 4)
            assert f.read() == b"\0" * 4
    finally:
        src.unlink(missing_ok=True)


def test_dense_files_of_every_size_are_copied_exactly(tmp_path):
    for size in (0, 1, 4095, 4096, COPY_CHUNK + 12345):
        data = os.urandom(size)
        (tmp_path / f"in{size}").write_bytes(data)
        _copy(tmp_path / f"in{size}", tmp_path / f"out{size}")
        assert (tmp_path / f"out{size}").read_bytes() == data, size


def test_a_memfd_source_keeps_its_holes(tmp_path):
    """The task filesystem's template lives in a memfd (sandbox/taskfs.py): copied into the image file sparse."""
    fd = os.memfd_create("t")
    try:
        os.ftruncate(fd, 64 << 20)
        os.pwrite(fd, b"superblock", 1024)
        out = os.open(tmp_path / "image", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            copy_fd(fd, out)
            st = os.fstat(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    assert st.st_size == 64 << 20 and st.st_blocks * 512 <= 64 << 10
    with open(tmp_path / "image", "rb") as f:
        f.seek(1024)
        assert f.read(10) == b"superblock"
