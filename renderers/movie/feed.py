"""``PictureFeed``: the stills path's raw pictures go to ffmpeg through a FIFO, written by a thread.

Why: written to a file first, ffmpeg could only start once every picture was composited (and 6 MB per 1080p
picture had gone through the page cache). Through a FIFO, ffmpeg starts at once — its start-up and x264's set-up,
about 0.1 s, overlap the compositing — and it encodes each picture as it arrives.

A writer blocks in ``open`` until ffmpeg opens the FIFO, so ``stop`` opens the reading end itself to release a
writer that ffmpeg never met (it failed first), and waits for the thread; a second ``start`` (an encoder retry)
stops the first writer before a new one begins, so two writers never share the FIFO.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


class PictureFeed:
    def __init__(self, path: Path, chunks: Callable[[], Iterable[bytes]]) -> None:
        os.mkfifo(path, 0o600)
        self.path, self.chunks = path, chunks
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start writing (call it right before each ffmpeg run that reads the FIFO)."""
        self.stop()
        self._thread = threading.Thread(target=self._write, name="picture-feed", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            with open(self.path, "wb") as out:
                for chunk in self.chunks():
                    out.write(chunk)
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: it has every frame it needs (trim), or it failed and says why
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop() on the rendering thread
            self._error = exc

    def stop(self) -> None:
        """Wait for the writer to end, releasing it if no reader ever came; re-raise what it failed with."""
        thread, self._thread = self._thread, None
        while thread is not None and thread.is_alive():
            try:
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))  # a reader for a moment: open returns
            except OSError:
                pass
            thread.join(timeout=0.05)
        error, self._error = self._error, None
        if error is not None:
            raise error
