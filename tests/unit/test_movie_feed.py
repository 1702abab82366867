"""The stills path's picture FIFO (renderers/movie/feed.py): a reader gets every byte; a writer nobody reads
from never hangs the render; a compositing error reaches the rendering thread."""
from __future__ import annotations

import threading

import pytest

from renderers.movie.feed import PictureFeed


def test_reader_gets_every_chunk(tmp_path):
    feed = PictureFeed(tmp_path / "pictures.rgb", lambda: (bytes([i]) * 100_000 for i in range(5)))
    feed.start()
    with open(tmp_path / "pictures.rgb", "rb") as reader:
        data = reader.read()
    feed.stop()
    assert data == b"".join(bytes([i]) * 100_000 for i in range(5))


def test_no_reader_does_not_hang(tmp_path):
    feed = PictureFeed(tmp_path / "pictures.rgb", lambda: [b"x" * 1_000_000])
    feed.start()  # as when ffmpeg fails before it opens its input
    done = threading.Event()
    threading.Thread(target=lambda: (feed.stop(), done.set()), daemon=True).start()
    assert done.wait(10)


def test_a_second_start_replaces_the_first_writer(tmp_path):
    feed = PictureFeed(tmp_path / "pictures.rgb", lambda: [b"abc"])
    feed.start()
    feed.start()  # an encoder retry: only one writer may be left
    with open(tmp_path / "pictures.rgb", "rb") as reader:
        assert reader.read() == b"abc"
    feed.stop()


def test_compositing_error_is_raised_by_stop(tmp_path):
    def chunks():
        yield b"x" * 10
        raise ValueError("bad picture")

    feed = PictureFeed(tmp_path / "pictures.rgb", chunks)
    feed.start()
    with open(tmp_path / "pictures.rgb", "rb") as reader:
        reader.read()
    with pytest.raises(ValueError, match="bad picture"):
        feed.stop()
