"""Conformance with the manim CLI: each scene of ``scenes.py`` rendered through POST /api/v2/render on a live
appliance and by the venv's ``manim`` at the same size and frame rate, compared frame by frame (``harness.py``).

The ``fast`` scenes (a still, an ImageMobject from an array and from a file the scene writes, Text, MathTex, a
plot, an updater) run in the default pytest run at FAST_FPS; the full set is marked ``conformance`` and runs
with ``pytest -m conformance tests/conformance`` at FULL_FPS. A scene the CLI renders and the API fails is a bug
in the appliance, never a scene to drop.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.harness import Case, conform
from tests.conformance.scenes import FAST, SCENES
from tests.conftest import Server

FAST_FPS = 10
FULL_FPS = 15  # the CLI's -ql rate; "low" is 854x480 either way


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    """One server for the module: scenes run one after another, each while the CLI renders its reference."""
    data = tmp_path_factory.mktemp("conformance")
    # an explicit manim_split_max_workers forces the split path (on 2 free slots the cost model renders whole)
    server = Server(data, {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": "2"}).start()
    try:
        server.cli("users", "create", "ada", "--credits", "100000")
        server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
        yield server
    finally:
        server.stop()


def _record(tmp_path: Path, case: Case, fps: int, outcome) -> None:
    """One JSON line per scene (API and CLI seconds, frames, PSNRs) in the pytest tmp dir, for the report."""
    line = {"scene": case.name, "fps": fps, "api_s": round(outcome.api_s, 2), "cli_s": round(outcome.cli_s, 2),
            "frames": outcome.frames, "psnr_db": [round(p, 1) if p != float("inf") else "inf" for p in outcome.psnr]}
    with open(tmp_path.parent / "conformance.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("case", FAST, ids=[case.name for case in FAST])
def test_fast_scene_matches_the_cli(appliance, tmp_path: Path, case: Case) -> None:
    _record(tmp_path, case, FAST_FPS, conform(appliance, case, tmp_path, FAST_FPS))


@pytest.mark.slow
@pytest.mark.conformance
@pytest.mark.parametrize("case", SCENES, ids=[case.name for case in SCENES])
def test_scene_matches_the_cli(appliance, tmp_path: Path, case: Case) -> None:
    _record(tmp_path, case, FULL_FPS, conform(appliance, case, tmp_path, FULL_FPS))
