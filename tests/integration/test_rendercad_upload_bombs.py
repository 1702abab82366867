"""Uploads a stranger controls, at finalize (issue #17 items 7 and 9): eight 100-megapixel PNGs of 0.4 MB each,
finalized at once, are checked without inflating their pixels in the server (it stays small and answers
/healthz); a truncated PNG is still refused readably; a refused upload is no longer public; every file is served
with nosniff."""
from __future__ import annotations

import io
import threading
import time
import warnings
import zlib

import httpx
import psutil
from PIL import Image

from tests.integration.test_rendercad_render import act, photo, rc, rc_box, upload  # noqa: F401 - fixtures


def big_png(side: int = 10_000) -> bytes:
    """A valid grey PNG of side² pixels (100 MP) in well under a megabyte, written chunk by chunk (Pillow would
    need the 300 MB picture in memory to write it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    raw = zlib.compressobj(9)
    row = b"\0" + b"\x80" * side
    body = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_eight_100_megapixel_pngs_at_once_do_not_swell_the_server(rc):  # noqa: F811 - the fixture
    data = big_png()
    assert len(data) < 1 << 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (10_000, 10_000)
    jobs = []
    for _ in range(8):
        job_id = act(rc, "create_job", {"model": "classic"}).json()["job_id"]
        assert upload(rc, job_id, data, "image/png").status_code == 200
        jobs.append(job_id)
    server = psutil.Process(rc.proc.pid)
    before, peak, answers = server.memory_info().rss, [0], []

    def watch() -> None:
        while len(answers) < len(jobs):
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    finalizers = [threading.Thread(target=lambda j=j: answers.append(act(rc, "finalize_job", {"job_id": j})))
                  for j in jobs]
    for t in finalizers:
        t.start()
    health = httpx.get(f"{rc.url}/healthz", timeout=10)
    health_s = time.monotonic() - started
    for t in finalizers:
        t.join()
    watcher.join()
    assert health.status_code == 200
    assert all(a.status_code in (200, 429) for a in answers), [a.text for a in answers]  # 429: credits/plan
    grown = (peak[0] - before) >> 20
    assert grown < 200, f"the server grew by {grown} MB checking eight 100 MP PNGs"
    assert health_s < 2, f"/healthz took {health_s:.2f} s while they were checked"


def test_a_truncated_png_is_refused_and_a_refused_upload_is_not_public(rc):  # noqa: F811 - the fixture
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, "PNG")
    job_id = act(rc, "create_job", {"model": "classic"}).json()["job_id"]
    presigned = act(rc, "presign_upload", {"job_id": job_id, "slot": "input_main", "content_type": "image/png"})
    asset = presigned.json()["asset_url"]
    assert httpx.put(presigned.json()["presigned_url"], content=png.getvalue()[:-20],
                     headers={"Content-Type": "image/png"}, timeout=10).status_code == 200
    r = act(rc, "finalize_job", {"job_id": job_id})
    assert r.status_code == 422 and "could not be read" in r.json()["error"], r.text
    assert httpx.get(asset, timeout=10).status_code == 404
    job_id = act(rc, "create_job", {"model": "classic"}).json()["job_id"]
    assert upload(rc, job_id, photo()).status_code == 200
    served = httpx.get(f"{rc.url}/renders/{job_id}_input", timeout=10)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"
