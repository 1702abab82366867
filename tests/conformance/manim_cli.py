"""The manim CLI with the appliance's compatibility shims applied first (renderers/manim_compat.py).

The reference for scenes that the plain CLI cannot render with this environment's Pillow (every ImageMobject:
Manim 0.22's camera passes ``mode=`` to ``Image.fromarray``, which Pillow 13 refuses):
``python -m tests.conformance.manim_cli render -r 854,480 --fps 15 scene.py Scene``.
"""
from __future__ import annotations

import sys

from renderers import manim_compat

if __name__ == "__main__":
    manim_compat.apply()
    from manim.__main__ import main

    sys.argv[0] = "manim"
    sys.exit(main())
