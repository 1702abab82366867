"""Fetching a movie's sources, server side (services/pipelines/media.py): a local HTTP server and the assets
directory, for real. A cached source is revalidated (304), a stranger's URL never reaches the box's own
addresses, a source over the size cap leaves no partial file, and an asset path stays inside the assets dir."""
from __future__ import annotations

import functools

import pytest

from appliance.services.pipelines import media as sources
from tests.integration.test_movie_renderer import RecordingHandler, media, media_server  # noqa: F401 - fixtures


def test_fetch_caches_and_revalidates(media_server, media, tmp_path):
    url = f"{media_server}/red.png"
    first = sources.fetch_source(url, tmp_path, media, max_bytes=1 << 20, timeout_s=5, allow_loopback=True)
    assert first.read_bytes() == (media / "red.png").read_bytes()
    RecordingHandler.requests.clear()
    second = sources.fetch_source(url, tmp_path, media, max_bytes=1 << 20, timeout_s=5, allow_loopback=True)
    assert second == first and RecordingHandler.requests == [("/red.png", 304)]
    assert sources.file_digest(first) == sources.file_digest(media / "red.png")


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:9/x.png", "loopback, link-local or reserved address"),
    ("http://localhost:9/x.png", "loopback, link-local or reserved address"),
    ("http://169.254.169.254/latest", "loopback, link-local or reserved address"),
    ("http://[::1]:9/x.png", "loopback, link-local or reserved address"),
    ("http://[::ffff:127.0.0.1]:9/x.png", "loopback, link-local or reserved address"),
    ("http://2130706433:9/x.png", "loopback, link-local or reserved address"),
    ("ftp://example.com/x.png", "unsupported scheme 'ftp'"),
])
def test_fetch_refuses_local_targets(url, message, tmp_path, media):
    with pytest.raises(sources.SourceError, match=message):
        sources.fetch_source(url, tmp_path, media, max_bytes=1 << 20, timeout_s=5, allow_loopback=False)


def test_fetch_caps_the_size(media_server, media, tmp_path):
    with pytest.raises(sources.SourceError, match="larger than 1000 bytes"):
        sources.fetch_source(f"{media_server}/upbeat.mp3", tmp_path, media, max_bytes=1000, timeout_s=5,
                             allow_loopback=True)
    with pytest.raises(sources.SourceError, match="HTTP 404"):
        sources.fetch_source(f"{media_server}/nothing.png", tmp_path, media, max_bytes=1000, timeout_s=5,
                             allow_loopback=True)
    assert not list(tmp_path.glob("*.part"))


def test_asset_paths_stay_inside_the_assets_dir(media, tmp_path):
    fetch = functools.partial(sources.fetch_source, cache_dir=tmp_path, assets_dir=media, max_bytes=1 << 20,
                              timeout_s=5, allow_loopback=False)
    assert fetch("red.png") == (media / "red.png").resolve()
    assert fetch(f"file://{media / 'green.png'}") == (media / "green.png").resolve()
    secret = tmp_path / "secret.txt"
    secret.write_text("not an asset")
    (media / "escape.png").symlink_to(secret)
    try:
        for source in ("../outside.png", str(secret), f"file://{secret}", "escape.png"):
            with pytest.raises(sources.SourceError, match="outside the assets directory|no such asset"):
                fetch(source)
    finally:
        (media / "escape.png").unlink()
    with pytest.raises(sources.SourceError, match="no such asset"):
        fetch("missing.png")
