"""A diffusers folder as the model registry carries it (issue #23, kind ``img2img``): the CLI sends the folder as
one uncompressed tar on the admin API's body; the server takes each member in as an artifact, never as a path
of its own choosing; the folder's identity is one SHA-256 over its files' names and digests.

What a member may be is narrow, because the tar is a stranger's bytes even when the operator sent it: regular
files only (no links, devices or folders entries that matter), a relative name of at most ``MAX_DEPTH`` plain
parts (no ``..``, no absolute path, no hidden part), one of ``SUFFIXES`` (configs, tokenizer files and
safetensors weights: never a pickle, ``.bin``/``.ckpt``/``.pt``, which runs code when it is loaded), at most
``MAX_FILES`` of them and ``MAX_MODEL_BYTES`` in all. Anything else refuses the whole folder with its name."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.runtime.artifacts import Artifacts

SUFFIXES = (".json", ".txt", ".safetensors", ".model")  # .model: a sentencepiece tokenizer (T5-style encoders)
PICKLES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
MAX_FILES = 64  # an SDXL folder with a ControlNet has about 25
MAX_DEPTH = 3
PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


def _refuse(text: str) -> ApplianceError:
    return ApplianceError(f"model folder refused: {text}", status=422, code="REFUSED")


def member_name(name: str) -> str:
    """The member's name as it will be kept, or ApplianceError (422) naming it."""
    parts = name.removeprefix("./").split("/")
    if name.startswith("/") or not 1 <= len(parts) <= MAX_DEPTH or not all(PART.match(p) for p in parts):
        raise _refuse(f"{name[:200]!r} is not a plain relative name of at most {MAX_DEPTH} parts "
                      "(letters, digits, '_', '.', '+', '-')")
    if name.lower().endswith(PICKLES):
        raise _refuse(f"{name[:200]} is a pickle, which runs code when it is loaded: save the weights as "
                      "safetensors (save_pretrained(..., safe_serialization=True))")
    if not name.lower().endswith(SUFFIXES):
        raise _refuse(f"{name[:200]}: only {', '.join(SUFFIXES)} files are taken")
    return "/".join(parts)


def wanted(path: Path) -> list[str]:
    """The files of a local folder the CLI sends (what member_name takes), sorted; pickles and other files are
    left behind (the CLI names them)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), path).replace(os.sep, "/")
            if name.lower().endswith(SUFFIXES) and not name.startswith(".") and os.path.isfile(
                    os.path.join(dirpath, name)):
                found.append(rel)
    return sorted(found)


def take_in(tar_path: Path, artifacts: Artifacts, max_bytes: int) -> dict[str, str]:
    """Each regular member of the tar into the artifact store: {relative name: digest}. ApplianceError (422)
    for the first member that is not allowed, a folder without model_index.json, or too many files or bytes."""
    files: dict[str, str] = {}
    total = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isreg():
                    raise _refuse(f"{member.name[:200]!r} is a link or a special file; only regular files are "
                                  "taken")
                name = member_name(member.name)
                if name in files:
                    raise _refuse(f"{name} is in the tar twice")
                total += member.size
                if len(files) >= MAX_FILES or total > max_bytes:
                    raise _refuse(f"more than {MAX_FILES} files or {max_bytes >> 30} GiB")
                source = tar.extractfile(member)
                assert source is not None  # a regular member always has its bytes
                with tempfile.NamedTemporaryFile(dir=tar_path.parent, suffix=".member", delete=False) as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                try:
                    files[name] = artifacts.put(Path(out.name))
                finally:
                    os.unlink(out.name)
    except tarfile.TarError as exc:
        raise _refuse(f"the body is not a tar of the folder ({exc})") from None
    if "model_index.json" not in files:
        raise _refuse("no model_index.json at its top: a diffusers pipeline folder (save_pretrained) is needed")
    return files


def folder_digest(files: dict[str, str]) -> str:
    """The folder's SHA-256: over its sorted names and their files' digests (a renamed file is another model)."""
    return hashlib.sha256("".join(f"{name}\0{files[name]}\n" for name in sorted(files)).encode()).hexdigest()


def tar_stream(path: Path, names: list[str]) -> Iterator[bytes]:
    """The folder's files as an uncompressed tar, made while it is sent (an SDXL folder is 7 GB: no copy on
    disk). A thread writes the tar into a pipe; the iterator reads it."""
    import threading

    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as sink, tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                info = tar.gettarinfo(str(path / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path / name, "rb") as f:
                    tar.addfile(info, f)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as source:
        yield from iter(lambda: source.read(1 << 20), b"")
    thread.join()
