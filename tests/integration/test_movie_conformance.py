"""Movie conformance: documents shaped like real template libraries (tests/media/movie_docs.py), rendered by the
real renderer scene by scene and assembled, then checked by probing and decoding: duration, size, audio present
(loud and silent where the document says), and every layer visible where and when the document says (the
oracle, tests/media/movie_oracle.py, picks a point each layer decides, inside and just outside its window).

Five small documents run in the normal run; the full set (30+) runs with ``-m conformance``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from renderers.base import NullReporter
from renderers.movie.assemble import render_assemble
from renderers.movie.compose import render_scene
from renderers.movie.layers import draw_order, font_file, scaled_box, window
from renderers.movie.spec import scene_sources, validate_and_normalize
from tests.media import movie as m
from tests.media.movie_docs import COVERING_FONT, DOCUMENTS, Doc, make_media
from tests.media.movie_oracle import probes

BUILT = [build() for build in DOCUMENTS]
PARAMS = [pytest.param(doc, id=doc.name, marks=() if doc.fast else pytest.mark.conformance) for doc in BUILT]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return make_media(tmp_path_factory.mktemp("conformance-media"))


def test_the_suite_has_thirty_documents():
    assert len({doc.name for doc in BUILT}) == len(BUILT) >= 30
    assert 4 <= sum(doc.fast for doc in BUILT) <= 6


def _covering_font(char: str) -> str | None:
    """The file name (no suffix) of an installed font that has the character: a family name the renderer finds."""
    out = subprocess.run(["fc-list", f":charset={ord(char):x}", "file"], capture_output=True, text=True).stdout
    files = sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())
    return Path(files[0]).stem if files else None


def _tofu(text: str, family: str) -> list[str]:
    """The characters the renderer's font for ``family`` draws as its missing-glyph box."""
    font = ImageFont.truetype(font_file(family, False), 48)
    missing = font.getmask("\ue000")  # a private-use code point: the .notdef glyph
    return [char for char in set(text) - {" "} if (mask := font.getmask(char)).size == missing.size
            and bytes(mask) == bytes(missing)]


def _with_font(doc: Doc, family: str) -> Doc:
    for layer in (layer for scene in doc.scenes for layer in scene["layers"]):
        if layer.get("fontFamily") == COVERING_FONT:
            layer["fontFamily"] = family
    return doc


def render_movie(doc: Doc, media: Path, root: Path) -> tuple[dict, Path]:
    movie = validate_and_normalize(doc.movie())
    scene_files = []
    for index, scene in enumerate(movie["scenes"]):
        workdir = root / f"scene_{index}"
        workdir.mkdir(parents=True)
        for source in scene_sources(scene):
            shutil.copy(media / source, workdir / source)
        task = {"scene": scene, "width": doc.width, "height": doc.height, "fps": doc.fps,
                "sources": {source: source for source in scene_sources(scene)}}
        render_scene(task, workdir, NullReporter())
        scene_files.append(workdir / "scene.mp4")
    assemble = root / "assemble"
    assemble.mkdir()
    names = []
    for index, path in enumerate(scene_files):
        names.append(f"scene_{index:03d}.mp4")
        shutil.copy(path, assemble / names[-1])
    render_assemble({"scenes": names}, assemble, NullReporter())
    return movie, assemble / "output.mp4"


def frames_at(path: Path, numbers: list[int], width: int, height: int) -> dict[int, np.ndarray]:
    """Decode only the frames asked for (a 1080p movie decoded whole would take gigabytes)."""
    wanted = sorted(set(numbers))
    choose = "+".join(f"eq(n\\,{n})" for n in wanted)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select={choose}", "-vsync", "0",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    assert len(decoded) == len(wanted)
    return dict(zip(wanted, decoded, strict=True))


def _streams(path: Path) -> dict[str, dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {stream["codec_type"]: stream for stream in json.loads(out)["streams"]}


@pytest.mark.slow
@pytest.mark.parametrize("doc", PARAMS)
def test_document(doc: Doc, media, tmp_path):
    if doc.needs:
        family = _covering_font(doc.needs)
        if family is None:
            pytest.skip(f"no installed font has U+{ord(doc.needs):04X} (install e.g. fonts-noto-cjk)")
        doc = _with_font(doc, family)
        for layer in (layer for scene in doc.scenes for layer in scene["layers"] if layer.get("text")):
            assert not _tofu(layer["text"], layer.get("fontFamily", "DejaVu Sans")), layer["text"]
    movie, out = render_movie(doc, media, tmp_path)
    streams = _streams(out)
    counts = [round(scene["duration"] * doc.fps) for scene in movie["scenes"]]
    video = streams["video"]
    assert (video["width"], video["height"], int(video["nb_read_frames"])) == (doc.width, doc.height, sum(counts))
    assert "audio" in streams and streams["audio"]["channels"] == 2
    assert abs(float(streams["audio"]["duration"]) - sum(counts) / doc.fps) < 0.05
    for start, end in doc.loud:
        assert m.rms_db(out, start, end) > -40, f"silence in {start}-{end} s"
    for start, end in doc.quiet:
        assert m.rms_db(out, start, end) < -60, f"sound in {start}-{end} s"

    checks, inks, offset = [], [], 0
    for scene, paints, count in zip(movie["scenes"], doc.paints, counts, strict=True):
        paints = {key: dataclasses.replace(p, clip=media / p.clip) if p.clip else p for key, p in paints.items()}
        found, missing = probes({**scene, "_width": doc.width, "_height": doc.height}, paints, doc.fps)
        assert not missing, f"{scene['id']}: no point shows layers {missing} (the document hides them)"
        checks += [(offset + probe.frame, probe) for probe in found]
        inks += [(offset, scene, layer) for layer in draw_order(scene["layers"])
                 if paints[layer["id"]].kind in ("unknown", "band") and layer["type"] == "text" and layer["text"]]
        offset += count
    ink_frames = [offset + (win.first + win.end) // 2 for offset, scene, layer in inks
                  for win in [window(layer, doc.fps, round(scene["duration"] * doc.fps))]]
    decoded = frames_at(out, [frame for frame, _ in checks] + ink_frames, doc.width, doc.height)
    for frame, probe in checks:
        got = decoded[frame][probe.y, probe.x].astype(int)
        tolerance = 24 if probe.inside else 20
        assert np.abs(got - probe.rgb).max() <= tolerance, (
            f"layer {probe.layer} at frame {frame} ({'inside' if probe.inside else 'outside'} its window), "
            f"({probe.x}, {probe.y}): {tuple(got)}, expected {probe.rgb}")
    for (_, _scene, layer), frame in zip(inks, ink_frames, strict=True):
        w, h, cx, cy = scaled_box(layer)
        x0, y0 = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
        box = decoded[frame][y0:y0 + round(h), x0:x0 + round(w)].astype(int)
        ink = box.min(axis=2) > 180  # white glyphs (every box colour has a channel below 180)
        assert ink.sum() > max(30, 0.003 * ink.size), f"text layer {layer['id']} draws {ink.sum()} pixels of ink"
