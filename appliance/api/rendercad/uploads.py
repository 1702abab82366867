"""Upload slots: presigned PUT URLs on the appliance itself (HMAC of job, slot, content type and expiry with a
secret kept in the data dir), the PUT streamed to disk, and the check finalize_job makes of each upload."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from litestar import Request, Response

from appliance.api.rendercad.common import RCError
from appliance.runtime.artifacts import link_or_copy
from appliance.services.jobs import JobService
from appliance.store import rendercad as store

CONTENT_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}
FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}
EXPIRES_IN = 300
MAX_BYTES = 80 * 1024 * 1024
MAX_PIXELS = 100_000_000  # a decompression bomb is refused before it is decoded
TOO_LARGE = "The uploaded image is larger than 80 MB. You were not charged."
UNREADABLE = "The uploaded image could not be read. Upload a JPEG, PNG, WebP or GIF image. You were not charged."
TOO_MANY_PIXELS = "The uploaded image has too many pixels (at most 100 megapixels). You were not charged."
REFUSALS = frozenset({TOO_LARGE, UNREADABLE, TOO_MANY_PIXELS})  # why finalize refused an upload


def shown_error(error: str | None, display: Callable[[str | None], str]) -> str:
    """A failed job's error as its owner sees it: why finalize refused an upload (the core job's error, already
    display-safe: the 422's own words), else the endpoint's display text for the core's error."""
    return error if error is not None and error in REFUSALS else display(error)


@lru_cache(maxsize=8)
def _secret(data_dir: str) -> bytes:
    """One signing secret per appliance, made on first use; never leaves the data dir."""
    path = Path(data_dir) / "rendercad-upload.key"
    if not path.exists():
        tmp = path.with_suffix(f".{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(32))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_text().strip().encode()


def signature(data_dir: Path, job_id: str, slot: str, content_type: str, expires: int) -> str:
    message = f"{job_id}\n{slot}\n{content_type}\n{expires}".encode()
    return hmac.new(_secret(str(data_dir.resolve())), message, hashlib.sha256).hexdigest()


def presign(service: JobService, job_id: str, slot: str, content_type: str) -> dict:
    expires = int(time.time()) + EXPIRES_IN
    sig = signature(service.settings.data_dir, job_id, slot, content_type, expires)
    base = service.settings.base_url
    return {"presigned_url": f"{base}/backend/upload/{job_id}/{slot}?expires={expires}&sig={sig}",
            "asset_url": f"{base}/renders/{job_id}_input", "slot": slot, "index": None, "expires_in": EXPIRES_IN,
            "cache_control": "public, max-age=31536000, immutable"}


def upload_dir(service: JobService, job_id: str) -> Path:
    return service.settings.data_dir / "uploads" / job_id


def _check_signature(request: Request, service: JobService, job_id: str, slot: str) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        raise RCError(403, "Invalid upload signature") from None
    want = signature(service.settings.data_dir, job_id, slot, content_type, expires)
    # bytes, not str: compare_digest refuses a str with non-ASCII characters (a forged sig must be a 403)
    if not hmac.compare_digest(want.encode(), request.query_params.get("sig", "").encode("utf-8", "replace")):
        raise RCError(403, "Invalid upload signature")
    if time.time() > expires:
        raise RCError(403, "Upload URL has expired")
    return content_type


async def receive(request: Request, service: JobService, job_id: str, slot: str) -> Response:
    """PUT of one slot's bytes, written to disk as they arrive; past 80 MB the rest is refused."""
    content_type = _check_signature(request, service, job_id, slot)
    job = store.one_job(service.db, job_id)
    if job is None or job["status"] != "uploading":
        raise RCError(409, "This job is not accepting uploads")
    folder = upload_dir(service, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    path, size = folder / f"{slot}{CONTENT_TYPES[content_type]}", 0
    partial = path.with_suffix(f".part{secrets.token_hex(4)}")
    with open(partial, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BYTES:
                break
            out.write(chunk)
    if size > MAX_BYTES:
        partial.unlink(missing_ok=True)
        store.put_upload(service.db, job_id, slot, content_type, "", size)
        raise RCError(413, "Uploaded images must be 80MB or smaller")
    os.replace(partial, path)
    store.put_upload(service.db, job_id, slot, content_type, str(path), size)
    return Response(content=b"", status_code=200, headers={"ETag": f'"{size:x}"'})


def problem(service: JobService, upload: dict) -> str | None:
    """None when the upload is a real JPEG/PNG/WebP/GIF of at most 80 MB and 100 MP, else the display-safe
    reason. Blocking: run it in a worker thread. The picture is read in the verifier (runtime/verifier.py:
    unprivileged, no network, a deadline), never decoded in the server; its two processes are the bound on how
    many pictures are checked at once."""
    if upload["size"] > MAX_BYTES or not upload["path"]:
        return TOO_LARGE
    found = service.check_image(Path(upload["path"]), sorted(FORMATS), MAX_PIXELS)
    return {None: None, "too_many_pixels": TOO_MANY_PIXELS}.get(found, UNREADABLE)


def asset_file(service: JobService, user_id: str, url: object, field: str) -> Path:
    """The file behind one of this user's RenderCAD asset URLs (`…/renders/{job_id}` — the finished image —
    or `…/renders/{job_id}_input`, the uploaded one). Nothing is fetched: a URL that is not an asset URL is a
    400, an asset of another user's (or of nobody's) a 404."""
    path = urlsplit(url).path if isinstance(url, str) and len(url) <= 2048 else ""
    head, _, name = path.rpartition("/")
    if not head.endswith("/renders") or not name:
        raise RCError(400, f"{field} must be a RENDERCAD asset URL ({service.settings.base_url}/renders/…)")
    job_id = name[:-len("_input")] if name.endswith("_input") else name
    if job_id.lower().endswith((".jpg", ".jpeg")):
        job_id = job_id.rsplit(".", 1)[0]
    row = store.get_job(service.db, job_id, user_id)
    if row is None:
        raise RCError(404, f"{field}: asset not found")
    if name.endswith("_input"):
        got = store.uploads_of(service.db, job_id).get("input_main")
        file = Path(got["path"]) if got and got["path"] else None
    else:
        file = service.datadir.file_path(job_id, "render.jpg") if row["kind"] == "image" else None
    if file is None or not file.is_file():
        raise RCError(404, f"{field}: asset not found")
    return file


def copy_in(service: JobService, job_id: str, slot: str, source: Path) -> tuple[str, Path]:
    """An existing asset copied into a job's uploads as if it had been uploaded to `slot`: (content type, the
    copy). Blocking (a copy of up to 80 MB): run it in a worker thread, then record it with
    store.put_upload on the event loop. The copy is the job's own: deleting the source breaks nothing."""
    folder = upload_dir(service, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = source.suffix.lower() if source.suffix.lower() in (*CONTENT_TYPES.values(), ".jpeg") else ".jpg"
    target = folder / f"{slot}{suffix}"
    partial = target.with_suffix(f".part{secrets.token_hex(4)}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return {v: k for k, v in CONTENT_TYPES.items()}.get(suffix, "image/jpeg"), target


def link_all(service: JobService, old_id: str, new_id: str) -> dict[str, str]:
    """A retried job's uploads: hard links of the old job's files in a folder of its own (an upload is never
    changed in place, and deleting either job leaves the other's intact); slot -> the new path."""
    folder = upload_dir(service, new_id)
    linked = {}
    for slot, got in store.uploads_of(service.db, old_id).items():
        source = Path(got["path"]) if got["path"] else None
        if source is None or not source.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        link_or_copy(source, folder / source.name)
        linked[slot] = str(folder / source.name)
    return linked


def remove(service: JobService, job_id: str) -> None:
    shutil.rmtree(upload_dir(service, job_id), ignore_errors=True)
