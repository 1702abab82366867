"""A render that ends on a copied piece takes its stills (image.png, thumb.jpg) from the earlier render the piece
came from, where that render's were exact (``lastFrameExact``: drawn, never decoded from the lossy video), and
draws no frame for them (renderers/manim_scene.write_stills); without them, or where they are not exact, the
last frame is drawn or decoded as before. Either way the stills are those of a render without reuse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_manim_reuse import FRAME, REPO, assert_same_pictures, drawn, render, result, scene

# the base scene without its last animation: its last piece was not the last of the base render's video
SHORTER = "\n".join(scene().splitlines()[:-1]) + "\n"


def fresh_and_edited(tmp_path: Path, code: str, *, stills: bool) -> tuple[Path, Path, Path]:
    folders = base, edited, fresh = (tmp_path / "base", tmp_path / "edited", tmp_path / "fresh")
    for folder in folders:
        folder.mkdir()
    assert render(base, scene())["lastFrameExact"] is True
    render(edited, code, reuse=[base], stills=stills)
    render(fresh, code)
    return base, edited, fresh


def test_a_copied_last_piece_takes_the_earlier_renders_exact_stills(tmp_path: Path) -> None:
    base, edited, fresh = fresh_and_edited(tmp_path, scene(note="changed"), stills=True)
    assert drawn(edited, base) == [2]
    assert result(edited)["lastFrameExact"] is True
    for name in ("image.png", "thumb.jpg"):  # copied: the earlier render's bytes, and a fresh render's
        assert (edited / "work" / name).read_bytes() == (base / "work" / name).read_bytes()
        assert (edited / "work" / name).read_bytes() == (fresh / "work" / name).read_bytes()
    assert_same_pictures(edited, fresh, exact=False)


def test_a_drawn_last_piece_draws_its_stills(tmp_path: Path) -> None:
    base, edited, fresh = fresh_and_edited(tmp_path, scene(pixel=(10, 200, 10)), stills=True)
    assert drawn(edited, base) == [5, 6]
    assert result(edited)["lastFrameExact"] is True
    for name in ("image.png", "thumb.jpg"):
        assert (edited / "work" / name).read_bytes() == (fresh / "work" / name).read_bytes()
        assert (edited / "work" / name).read_bytes() != (base / "work" / name).read_bytes()


def test_a_last_piece_that_was_not_last_is_decoded_and_says_so(tmp_path: Path) -> None:
    """Its frame was never drawn: decoded from the video, so not exact, and the pipeline stages no stills of it."""
    base, edited, _ = fresh_and_edited(tmp_path, SHORTER, stills=True)
    assert result(edited)["reuse"]["reusedPieces"] == 6 == len(result(edited)["pieces"])
    assert result(edited)["lastFrameExact"] is False


def test_stills_that_are_missing_or_named_outside_the_workdir_are_ignored(tmp_path: Path) -> None:
    """A forged index names stills that are not there, or a path out of the workdir: the frame is drawn."""
    base = tmp_path / "base"
    base.mkdir()
    render(base, scene())
    for case, names in {"missing": ("nope.png", "nope.jpg"), "outside": ("../base/work/image.png", "x.jpg"),
                        "a folder": (".", "..")}.items():
        folder = tmp_path / case.replace(" ", "_")
        work = folder / "work"
        (work / "tmp").mkdir(parents=True)
        (work / "reuse_0.mp4").write_bytes((base / "work" / "video.mp4").read_bytes())
        (work / "x.jpg").write_bytes(b"not a jpeg")
        task = {"code": scene(), "className": "Demo", **FRAME,
                "reuse": {"sources": [{"video": "reuse_0.mp4", "pieces": result(base)["pieces"],
                                       "image": names[0], "thumbnail": names[1]}]}}
        (folder / "input.json").write_text(json.dumps(task))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "input.json", "work"], cwd=folder,
                              env=env, capture_output=True, text=True, timeout=120)
        last = json.loads(proc.stdout.splitlines()[-1])
        assert last["type"] == "result", f"{case}: {last}\n{proc.stderr[-2000:]}"
        assert last["outputs"]["reuse"]["reusedPieces"] == 7 and last["outputs"]["lastFrameExact"] is True, case
        for name in ("image.png", "thumb.jpg"):  # drawn: the same as the earlier render's
            assert (work / name).read_bytes() == (base / "work" / name).read_bytes(), case
