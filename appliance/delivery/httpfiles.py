"""Serving output files over HTTP: Range requests, ETags, HEAD, the right content type."""
from __future__ import annotations

import os
import re
from pathlib import Path

from litestar import Request, Response
from litestar.response import Stream

CONTENT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp", ".gif": "image/gif", ".vtt": "text/vtt; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8"}

CHUNK = 256 * 1024


def _etag(path: Path) -> str:
    st = path.stat()
    return f'"{st.st_size:x}-{int(st.st_mtime_ns):x}"'


def _read(path: Path, start: int, end: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = fh.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def serve_file(request: Request, path: Path, download_name: str | None = None) -> Response:
    size, etag = os.path.getsize(path), _etag(path)
    # nosniff: a file is what its extension says (a task's or a client's bytes are never sniffed into HTML)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "public, max-age=3600",
               "X-Content-Type-Options": "nosniff"}
    if download_name:
        headers["Content-Disposition"] = f'inline; filename="{download_name}"'
    media_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    if request.headers.get("if-none-match") == etag:
        return Response(content=b"", status_code=304, headers=headers)
    start, end, status = 0, size - 1, 200
    wanted = request.headers.get("range")
    if wanted and request.headers.get("if-range", etag) == etag:
        parsed = _parse_range(wanted, size)
        if parsed is None:
            headers["Content-Range"] = f"bytes */{size}"
            return Response(content=b"", status_code=416, headers=headers)
        start, end, status = *parsed, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(content=b"", status_code=status, headers=headers, media_type=media_type)
    return Stream(_read(path, start, end), status_code=status, headers=headers, media_type=media_type)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        start, end = max(0, size - int(match[2])), size - 1
    else:
        start, end = int(match[1]), int(match[2]) if match[2] else size - 1
    end = min(end, size - 1)
    return (start, end) if start <= end and start < size else None
