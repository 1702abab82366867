"""The live frame a renderer drops while it works: ``preview.jpg`` in its workdir, at most once a second, at most
320 pixels wide. The dashboard's job page shows the newest one, so an artist sees a mistake in the first seconds.

Cheap by construction: the clock is checked before any pixel is touched, the frame is shrunk before it is
encoded, and the file is replaced atomically (a reader never sees half a JPEG). Failures are ignored: a preview
never fails a render.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

NAME = "preview.jpg"
EVERY_S = 1.0
MAX_WIDTH = 320


class Preview:
    def __init__(self, workdir: Path, every_s: float = EVERY_S) -> None:
        self.path = Path(workdir) / NAME
        self.every_s = every_s
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def offer(self, frame: Callable[[], Image.Image], settled: bool = False) -> None:
        """``frame`` builds the picture; it is called only when a preview is due. ``settled``: the picture the
        render rests on (the end of an animation, maybe before a long pause), written whatever the clock says: one
        small JPEG per animation costs a few ms beside the animation's own frames."""
        if not settled and not self.due():
            return
        self._last = time.monotonic()
        try:
            image = frame().convert("RGB")  # before the resize: an RGBA resize weighs colour by alpha
            if image.width > MAX_WIDTH:
                image = image.resize((MAX_WIDTH, max(1, round(image.height * MAX_WIDTH / image.width))),
                                     Image.Resampling.BILINEAR)
            tmp = self.path.with_name(NAME + ".tmp")
            image.save(tmp, "JPEG", quality=70)
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            pass
