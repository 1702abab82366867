"""Fetch the media a movie references, in the SERVER (renderers run sandboxed, without network).

- ``http(s)://``: streamed with httpx, capped in size and time, cached in ``cache_dir`` by URL and revalidated
  with the ETag / Last-Modified the server gave; redirects are followed by hand so every hop is checked.
- ``file://`` or a bare path: only inside ``assets_dir`` (symlinks resolved first, escapes refused).
- Every URL and redirect hop passes the one network policy (``appliance.delivery.netpolicy``), and the
  connection goes to the address that policy checked (no DNS rebinding between check and connect).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from appliance.delivery import netpolicy
from appliance.runtime.artifacts import file_digest  # noqa: F401 - re-exported for callers of this module

MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class SourceError(Exception):
    """A source that cannot be used; the message is safe to show to the job's owner."""


def fetch_source(source: str, cache_dir: Path, assets_dir: Path, *, max_bytes: int, timeout_s: float,
                 allow_loopback: bool) -> Path:
    """A local file holding ``source``'s bytes (a cache entry or a file under ``assets_dir``)."""
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return _download(source, Path(cache_dir), max_bytes, timeout_s, allow_loopback)
    if scheme == "file":
        return _asset(_file_url_path(source), source, Path(assets_dir), max_bytes)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, i.e. a bare path
        raise SourceError(f"source {source!r}: unsupported scheme {scheme!r} (use http, https or an asset path)")
    return _asset(source, source, Path(assets_dir), max_bytes)


# --- assets ---------------------------------------------------------------------------------------------------

def _file_url_path(source: str) -> str:
    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise SourceError(f"source {source!r}: file URLs must not name a host")
    return unquote(parts.path)


def _asset(path_text: str, source: str, assets_dir: Path, max_bytes: int) -> Path:
    root = assets_dir.resolve()
    try:
        path = (root / path_text).resolve(strict=True)  # an absolute path_text replaces root
    except (OSError, RuntimeError):
        raise SourceError(f"source {source!r}: no such asset in assets_dir") from None
    if not path.is_relative_to(root):
        raise SourceError(f"source {source!r} is outside the assets directory (assets_dir)")
    if not path.is_file():
        raise SourceError(f"source {source!r} is not a file")
    if path.stat().st_size > max_bytes:
        raise SourceError(f"source {source!r} is larger than {max_bytes} bytes (media_max_mb)")
    return path


# --- network --------------------------------------------------------------------------------------------------

def check_host(url: str, allow_loopback: bool) -> netpolicy.Target:
    """The address to connect to, checked by the one network policy (appliance.delivery.netpolicy)."""
    try:
        return netpolicy.resolve(url, allow_loopback=allow_loopback)
    except netpolicy.RefusedURL as exc:
        local = "; for a file on this machine, put it under assets_dir and name it by path" if "loopback" in str(
            exc) else ""
        raise SourceError(f"source {url!r}: {exc}{local}") from None


def _cache_paths(url: str, cache_dir: Path) -> tuple[Path, Path]:
    digest = hashlib.sha256(url.encode()).hexdigest()
    suffix = Path(urlsplit(url).path).suffix.lower()
    suffix = suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""
    return cache_dir / f"{digest}{suffix}", cache_dir / f"{digest}.json"


def _validators(meta_path: Path, data_path: Path) -> dict[str, str]:
    """Conditional-request headers for a cached copy, if the server gave validators for it."""
    try:
        meta = json.loads(meta_path.read_text()) if data_path.is_file() else {}
    except (OSError, ValueError):
        return {}
    headers = {"If-None-Match": meta.get("etag"), "If-Modified-Since": meta.get("last_modified")}
    return {name: value for name, value in headers.items() if value}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every download: building one (loading the CA bundle) took 80-340 ms per source under
    load, most of a movie's planning time. An SSLContext may be shared between threads."""
    return httpx.create_ssl_context()  # what httpx builds per client by default (certifi's CA bundle)


def _download(url: str, cache_dir: Path, max_bytes: int, timeout_s: float, allow_loopback: bool) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    data_path, meta_path = _cache_paths(url, cache_dir)
    headers = _validators(meta_path, data_path)
    deadline = time.monotonic() + timeout_s
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, verify=_tls()) as client:
            return _fetch(client, url, headers, data_path, meta_path, deadline, max_bytes, allow_loopback)
    except httpx.TimeoutException:
        raise SourceError(f"source {url!r}: download failed (no answer within media_timeout_s = {timeout_s:g} s)"
                          ) from None
    except httpx.HTTPError as exc:
        raise SourceError(f"source {url!r}: download failed ({type(exc).__name__})") from None


def _fetch(client: httpx.Client, url: str, headers: dict[str, Any], data_path: Path, meta_path: Path, deadline: float,
           max_bytes: int, allow_loopback: bool) -> Path:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        pinned_url, host_header, extensions = check_host(current, allow_loopback).pinned()
        with client.stream("GET", pinned_url, headers={**headers, **host_header}, extensions=extensions) as response:
            if response.is_redirect and "location" in response.headers:
                current = urljoin(current, response.headers["location"])
                continue
            if response.status_code == 304 and headers:
                return data_path
            if response.status_code != 200:
                raise SourceError(f"source {url!r}: HTTP {response.status_code}")
            _save(response, data_path, deadline, max_bytes, url)
            _save_meta(response, meta_path, url)
            return data_path
    raise SourceError(f"source {url!r}: more than {MAX_REDIRECTS} redirects")


def _save(response: httpx.Response, data_path: Path, deadline: float, max_bytes: int, url: str) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise SourceError(f"source {url!r} is larger than {max_bytes} bytes (media_max_mb)")
    handle, temp_name = tempfile.mkstemp(dir=data_path.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            _copy_capped(response, out, deadline, max_bytes, url)
        os.replace(temp_name, data_path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _copy_capped(response: httpx.Response, out, deadline: float, max_bytes: int, url: str) -> None:
    received = 0
    for chunk in response.iter_bytes(_CHUNK):
        received += len(chunk)
        if received > max_bytes:
            raise SourceError(f"source {url!r} is larger than {max_bytes} bytes (media_max_mb)")
        if time.monotonic() > deadline:
            raise SourceError(f"source {url!r}: download took longer than the time limit")
        out.write(chunk)


def _save_meta(response: httpx.Response, meta_path: Path, url: str) -> None:
    meta = {"url": url, "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified")}
    if meta["etag"] or meta["last_modified"]:
        meta_path.write_text(json.dumps(meta))
    else:  # nothing to revalidate with: the next fetch downloads again
        meta_path.unlink(missing_ok=True)
