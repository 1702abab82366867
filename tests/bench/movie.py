"""`make bench` section `movie`: ViralSync Movie JSON renders against the x264 encode floor, MoviePy 2, concurrency
and memory. Measured, never asserted; every figure is taken in the same run on this machine.

- encode floor: ffmpeg encoding N frames of ``testsrc2`` at the movie's size and fps with libx264 at the
  compositor's preset (``compose.X264_PRESET``), yuv420p, muxed into an .mp4 file (not ``-f null``: our renders
  pay for muxing too). ``REPEAT`` runs, each right after the API run it is paired with (``_paired``): the
  ratios are given per pair too, as the load of a shared machine changes from minute to minute;
- API times: submit (``POST /v1/render/jobs``) → the ``done`` event on the job's SSE stream, on a real server
  (tests.conftest.Server) with its media served from a loopback HTTP server. Repeats defeat the scene cache by
  renaming the scenes (the name is part of the cache key and draws nothing), so every run renders every scene;
- MoviePy 2: tests/bench/moviepy_render.py under ``.venv-moviepy`` (``make bench`` builds it);
- peak RSS: ``python -m renderers movie.scene`` for the full example's first scene, its process tree's RSS summed
  and polled every 10 ms with psutil, plus the kernel's ru_maxrss (largest single process, from wait4).

``BENCH_MOVIE_SCALE`` (default 1) scales the canvas, boxes and font sizes for quick runs while developing;
``BENCH_MOVIE_REPEAT`` (default 3) sets the repeats; ``BENCH_MOVIE_MOVIEPY=0`` skips the MoviePy comparison.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil

from appliance.store.db import parse_iso
from renderers.ffmpeg import probe, video_stream
from renderers.movie.compose import X264_PRESET
from tests.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "viralsync-full-example.json"
MOVIEPY_PYTHON = ROOT / ".venv-moviepy" / "bin" / "python"
MOVIEPY_SCRIPT = Path(__file__).resolve().parent / "moviepy_render.py"
SCALE = float(os.environ.get("BENCH_MOVIE_SCALE", "1"))
REPEAT = int(os.environ.get("BENCH_MOVIE_REPEAT", "3"))
MOVIEPY = os.environ.get("BENCH_MOVIE_MOVIEPY", "1") != "0"
FPS = 30


def _line(name: str, value: str) -> None:
    from tests.bench.run import line  # run.py imports this module: import at call time

    line(name, value)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _scaled(movie: dict) -> dict:
    """The movie with its canvas, boxes and font sizes multiplied by SCALE (a no-op at 1)."""
    movie = copy.deepcopy(movie)
    if SCALE == 1:
        return movie
    movie["width"], movie["height"] = _even(movie["width"] * SCALE), _even(movie["height"] * SCALE)
    for layer in (layer for scene in movie["scenes"] for layer in scene["layers"]):
        layer["position"] = {k: v * SCALE for k, v in layer["position"].items()}
        layer["size"] = {k: v * SCALE for k, v in layer["size"].items()}
        if "fontSize" in layer:
            layer["fontSize"] = layer["fontSize"] * SCALE
    return movie


def _renamed(movie: dict, run: int) -> dict:
    """A copy whose scene names differ per run: same pictures and sound, new scene cache keys."""
    if run == 0:
        return movie
    movie = copy.deepcopy(movie)
    for scene in movie["scenes"]:
        scene["name"] = f"{scene.get('name') or scene['id']} (bench run {run})"
    return movie


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def _cpu_busy() -> float:
    """System-wide CPU seconds spent not idle, all cores together."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, system-wide busy CPU seconds) of fn()."""
    cpu, started = _cpu_busy(), time.perf_counter()
    fn()
    return time.perf_counter() - started, _cpu_busy() - cpu


def _median_runs(fn, repeat: int = REPEAT) -> tuple[float, float, list[float]]:
    """Run fn(run_index) ``repeat`` times: (median wall, median CPU, every wall time)."""
    runs = [_timed(functools.partial(fn, index)) for index in range(repeat)]
    walls = [wall for wall, _ in runs]
    return statistics.median(walls), statistics.median(cpu for _, cpu in runs), walls


def _runs(walls: list[float]) -> str:
    return "runs " + ", ".join(f"{wall:.2f}" for wall in walls)


# --- media and the loopback media server ----------------------------------------------------------------------

def _make_media(folder: Path, width: int, height: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}", "-t", "6", "-c:v", "libx264",
            "-preset", "veryfast", "-pix_fmt", "yuv420p", str(folder / "city.mp4"))
    for i in range(5):  # the busy scene's five sources (different bytes: a decode each)
        _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}", "-t", "6", "-vf", f"hue=h={72 * i}",
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(folder / f"city{i}.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", str(folder / "upbeat.mp3"))
    _ffmpeg("-f", "lavfi", "-i", f"color=c=white:s={_even(200 * SCALE)}x{_even(60 * SCALE)}", "-frames:v", "1",
            str(folder / "logo-white.png"))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _local_sources(movie: dict, base_url: str) -> dict:
    """The movie with every source URL pointing at the loopback media server (same file names)."""
    movie = copy.deepcopy(movie)
    for layer in (layer for scene in movie["scenes"] for layer in scene["layers"] if "source" in layer):
        layer["source"] = f"{base_url}/{layer['source'].rsplit('/', 1)[1]}"
    return movie


def _files(movie: dict, media: Path) -> dict[str, str]:
    return {layer["source"]: str(media / layer["source"].rsplit("/", 1)[1])
            for scene in movie["scenes"] for layer in scene["layers"] if "source" in layer}


# --- movies ---------------------------------------------------------------------------------------------------

def _text_image_scene(width: int, height: int) -> dict:
    """6 s, no video or audio (the compositor's stills path): a logo, a title at 0.95 opacity, a call to action."""
    s = width / 1920
    return {"id": "text_image", "name": "Text and image", "duration": 6, "bgColor": "#1a1a2e", "layers": [
        {"id": "logo", "type": "image", "source": "https://cdn.example.com/brand/logo-white.png", "startTime": 0.5,
         "duration": 5, "zIndex": 2, "position": {"x": 80 * s, "y": 60 * s},
         "size": {"width": 200 * s, "height": 60 * s}},
        {"id": "title", "type": "text", "text": "Summer Sale — Up to 50% Off", "startTime": 1, "duration": 4,
         "zIndex": 3, "position": {"x": 200 * s, "y": 400 * s}, "size": {"width": 1520 * s, "height": 200 * s},
         "fontSize": 96 * s, "fontWeight": "bold", "color": "#ffffff", "textAlign": "center",
         "transform": {"opacity": 0.95}},
        {"id": "cta", "type": "text", "text": "Shop now at example.com", "startTime": 0, "duration": 6,
         "zIndex": 1, "position": {"x": 360 * s, "y": 760 * s}, "size": {"width": 1200 * s, "height": 160 * s},
         "fontSize": 64 * s, "color": "#00d4ff", "textAlign": "center", "fontWeight": "600"}]}


def _many_layers(width: int, height: int, run: int) -> dict:
    """One 4 s scene shaped like a busy template: 20 video tracks from 5 sources (each used 4 times, trimmed
    apart), 60 logos and 40 captions: 120 layers, 100 of them overlays on top of the videos."""
    s, layers = width / 1920, []
    for i in range(20):
        layers.append({"id": f"v{i}", "type": "video", "source": f"https://cdn.example.com/footage/city{i % 5}.mp4",
                       "trimStart": 0.2 * (i // 5), "startTime": 0.1 * (i % 4), "duration": 3.5, "zIndex": 1,
                       "position": {"x": (i % 5) * 384 * s, "y": (i // 5) * 270 * s},
                       "size": {"width": 384 * s, "height": 270 * s}, "mute": True})
    for i in range(100):
        image = i < 60
        layer = {"id": f"o{i}", "startTime": 0.04 * (i % 25), "duration": 3, "zIndex": 2 + i,
                 "position": {"x": (i % 10) * 190 * s, "y": (i // 10) * 106 * s},
                 "size": {"width": 180 * s, "height": 54 * s}}
        layers.append({**layer, "type": "image", "source": "https://cdn.example.com/brand/logo-white.png"} if image
                      else {**layer, "type": "text", "text": f"caption {i} · {run}", "fontSize": 28 * s,
                            "color": "#ffcc00"})
    return {"width": width, "height": height, "fps": FPS,
            "scenes": [{"id": f"busy_{run}", "duration": 4, "bgColor": "#000000", "layers": layers}]}


def _six_scenes(width: int, height: int, run: int) -> dict:
    """Six 2 s scenes, each a video layer (half the canvas), a logo and a text that names the run."""
    s = width / 1920
    colors = ["#102030", "#301020", "#203010", "#2a2a2a", "#0f172a", "#1a1a2e"]
    scenes = [{"id": f"scene_{i}", "duration": 2, "bgColor": colors[i], "layers": [
        {"id": "clip", "type": "video", "source": "https://cdn.example.com/footage/city.mp4", "trimStart": 0.5 * i,
         "startTime": 0, "duration": 2, "zIndex": 1, "position": {"x": 480 * s, "y": 300 * s},
         "size": {"width": 960 * s, "height": 540 * s}, "mute": True},
        {"id": "logo", "type": "image", "source": "https://cdn.example.com/brand/logo-white.png", "startTime": 0,
         "duration": 2, "zIndex": 2, "position": {"x": 80 * s, "y": 60 * s},
         "size": {"width": 200 * s, "height": 60 * s}},
        {"id": "title", "type": "text", "text": f"Scene {i + 1} of 6 — run {run}", "startTime": 0.25,
         "duration": 1.75, "zIndex": 3, "position": {"x": 200 * s, "y": 880 * s},
         "size": {"width": 1520 * s, "height": 160 * s}, "fontSize": 72 * s, "fontWeight": "bold",
         "color": "#ffffff", "textAlign": "center"}]} for i in range(6)]
    return {"width": width, "height": height, "fps": FPS, "scenes": scenes}


# --- measurements ---------------------------------------------------------------------------------------------

def encode_floor(frames: int, width: int, height: int, out: Path) -> None:
    """ffmpeg: ``frames`` testsrc2 frames → libx264 at X264_PRESET, yuv420p, into an mp4 file."""
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}", "-frames:v", str(frames),
            "-c:v", "libx264", "-preset", X264_PRESET, "-pix_fmt", "yuv420p", str(out))


def _paired(measured, floor, label: str, frames: int) -> tuple[float, float, float, list[float]]:
    """``REPEAT`` pairs of (measured(run), one floor encode): on a machine shared with other work the load changes
    from minute to minute, and the two runs of a pair see about the same load. Prints the floor's line; returns
    (median measured wall, its median CPU, median floor wall, the ratio of each pair)."""
    pairs = [(_timed(functools.partial(measured, run)), _timed(floor)) for run in range(REPEAT)]
    floors = [f for _, (f, _) in pairs]
    _line(f"encode floor: testsrc2 {frames} frames -> x264 .mp4",
          f"{statistics.median(floors):.2f} s (cpu {statistics.median(c for _, (_, c) in pairs):.2f} s; "
          f"{_runs(floors)}; each run right after the {label} run it is paired with)")
    ratios = [m / f for (m, _), (f, _) in pairs]
    return (statistics.median(m for (m, _), _ in pairs), statistics.median(c for (_, c), _ in pairs),
            statistics.median(floors), ratios)


def _ratios(ratios: list[float]) -> str:
    return f"paired ratios {', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}"


class _Api:
    def __init__(self, server: Server) -> None:
        self.server = server
        server.cli("users", "create", "bench")
        self.headers = {"x-api-key": server.new_key("bench", "viralsync")["key"]}
        self.phases: list[dict[str, float]] = []  # per render, see _phases

    def render(self, movie: dict, **render_options) -> dict:
        """Submit and wait for the terminal SSE event; the job as GET /v1/jobs/{id} shows it afterwards."""
        body = {"kind": "movie", "projectId": "bench", "movie": movie,
                "renderOptions": {"qualityPreset": "fast", **render_options}}
        url = self.server.url
        sent = time.time()
        r = httpx.post(f"{url}/v1/render/jobs", json=body, headers=self.headers, timeout=30)
        if r.status_code != 202:
            raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
        job_id = r.json()["jobId"]
        with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/progress", headers=self.headers,
                          timeout=httpx.Timeout(10, read=120)) as stream:
            for text in stream.iter_lines():
                if text.startswith("event:") and text.split(":", 1)[1].strip() != "progress":
                    break
        self.phases.append(_phases(self.server, job_id, sent, time.time()))
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=self.headers, timeout=30).json()
        if job["status"] != "done":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        cached = [t["name"] for t in self.server.job(job_id)["tasks"] if t["renderer"] == "movie.scene" and t["cached"]]
        if cached:
            raise RuntimeError(f"job {job_id}: scenes {cached} came from the scene cache; the bench must render them")
        return job


PHASES = ("submit", "plan+admit", "scenes", "to assemble", "assemble", "publish", "to client")


def _phases(server: Server, job_id: str, sent: float, done: float) -> dict[str, float]:
    """Where a job's wall time went, from the server's SQLite: the POST until the job row exists, planning and
    admission until the first task starts, the scene tasks (first start to last end), the gap to the assemble
    task, the assemble task, settling and publishing, and the SSE ``done`` event reaching the client."""
    db = sqlite3.connect(server.data_dir / "appliance.db")
    try:
        created, completed = db.execute("select created_at, completed_at from jobs where id = ?", (job_id,)).fetchone()
        tasks = db.execute("select renderer, started_at, finished_at from tasks where job_id = ?", (job_id,)).fetchall()
    finally:
        db.close()
    scenes = [(parse_iso(s), parse_iso(f)) for renderer, s, f in tasks if renderer == "movie.scene"]
    assemble = [(parse_iso(s), parse_iso(f)) for renderer, s, f in tasks if renderer == "movie.assemble"][0]
    first, last = min(s for s, _ in scenes), max(f for _, f in scenes)
    marks = [sent, parse_iso(created), first, last, assemble[0], assemble[1], parse_iso(completed), done]
    return {name: end - start for name, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True)}


def _phase_line(phases: list[dict[str, float]]) -> str:
    return ", ".join(f"{name} {statistics.median(p[name] for p in phases):.3f}" for name in PHASES)


def _direct_scene(scene: dict, width: int, height: int, files: dict[str, str], workdir: Path) -> list[str]:
    """``python -m renderers movie.scene`` input and command for one scene, media copied into its workdir."""
    workdir.mkdir(parents=True)
    names = {}
    for layer in scene["layers"]:
        if "source" in layer:
            names[layer["source"]] = Path(files[layer["source"]]).name
            shutil.copy(files[layer["source"]], workdir / names[layer["source"]])
    task = workdir.parent / f"{workdir.name}.json"
    task.write_text(json.dumps({"scene": scene, "width": width, "height": height, "fps": FPS, "sources": names}))
    return [sys.executable, "-m", "renderers", "movie.scene", str(task), str(workdir)]


def _run_checked(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def peak_rss(cmd: list[str]) -> tuple[float, float, float]:
    """(peak of the process tree's summed RSS polled every 10 ms, kernel ru_maxrss of the largest single
    process in the tree, wall seconds), in MB."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root, peak = psutil.Process(proc.pid), 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        total = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        peak = max(peak, total)
        time.sleep(0.01)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"scene worker failed ({proc.returncode}): {stderr[-1500:]}")
    return peak / 2**20, usage.ru_maxrss / 1024, wall


def _moviepy(movie: dict, files: dict[str, str], tmp: Path) -> tuple[float, float, dict] | str:
    """(wall of the whole process, MoviePy's own render time, probe of its output), or why it did not run."""
    if not MOVIEPY_PYTHON.exists():
        return f"not run: {MOVIEPY_PYTHON.relative_to(ROOT)} is missing (make bench creates it)"
    out = tmp / "moviepy.mp4"
    job = tmp / "moviepy_job.json"
    job.write_text(json.dumps({"movie": movie, "files": files, "out": str(out), "preset": X264_PRESET}))
    started = time.perf_counter()
    proc = subprocess.run([str(MOVIEPY_PYTHON), str(MOVIEPY_SCRIPT), str(job)], cwd=tmp, capture_output=True,
                          text=True, env={**os.environ, "FFMPEG_BINARY": "ffmpeg"})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return f"failed: {(proc.stderr or proc.stdout)[-600:]}"
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, inner["render_s"], probe(out)


def _describe(info: dict) -> str:
    stream = video_stream(info) or {}
    audio = "aac" if any(s.get("codec_name") == "aac" for s in info["streams"]) else "no aac"
    return (f"{stream.get('width')}x{stream.get('height')} {stream.get('pix_fmt')} {stream.get('r_frame_rate')} "
            f"{float(info['format']['duration']):.2f} s, {audio}")


def _six_scene_ratios(apis: dict[str, _Api], width: int, height: int, media_url: str) -> None:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {(name, n): [] for name in apis for n in (1, 2)}
    for run in range(2):
        for name, api in apis.items():
            for workers in (1, 2):
                movie = _local_sources(_six_scenes(width, height, run * 2 + workers), media_url)  # new cache keys
                results[(name, workers)].append(_timed(functools.partial(api.render, movie,
                                                                         requestedConcurrency=workers)))
    cores = psutil.cpu_count()
    for name in apis:
        (c1, c1_cpu), (c2, c2_cpu) = ((statistics.median(w for w, _ in results[(name, n)]),
                                       statistics.median(c for _, c in results[(name, n)])) for n in (1, 2))
        _line(f"6 x 2 s scenes with video, {name}, concurrency 1 / 2 (goal >= 1.3)",
              f"{c1:.2f} s / {c2:.2f} s -> {c1 / c2:.2f} (median of 2 each, alternating)")
        _line("  system CPU busy, concurrency 1 | 2",
              f"{c1_cpu:.1f} cpu-s = {100 * c1_cpu / (c1 * cores):.0f}% of {cores} CPUs | "
              f"{c2_cpu:.1f} cpu-s = {100 * c2_cpu / (c2 * cores):.0f}%")


# --- the section ----------------------------------------------------------------------------------------------

def bench_movie(tmp: Path) -> None:
    tmp = tmp / "movie"
    tmp.mkdir()
    seed = json.loads(EXAMPLE.read_text())
    full = _scaled(seed["movie"])
    width, height = full["width"], full["height"]
    size = f"{width}x{height}p{FPS}" + (f" (BENCH_MOVIE_SCALE={SCALE:g})" if SCALE != 1 else "")
    media = tmp / "media"
    _make_media(media, width, height)
    httpd, media_url = _serve(media)
    full = _local_sources(full, media_url)
    files = _files(full, media)
    full_frames = round(sum(scene["duration"] for scene in full["scenes"]) * FPS)
    _line(f"movie bench at {size}, x264 preset", f"{X264_PRESET}; medians of {REPEAT} runs unless noted")

    still_frames = 6 * FPS
    (tmp / "server").mkdir()
    server = Server(tmp / "server", {"APPLIANCE_CPU_SLOTS": "2"})
    servers = [server.start()]
    try:
        api = _Api(server)
        warm = {"width": 640, "height": 360, "fps": FPS, "scenes": [
            {"id": "warm", "duration": 0.5, "layers": [{"id": "t", "type": "text", "text": "warm-up",
                                                          "position": {"x": 20, "y": 20},
                                                          "size": {"width": 300, "height": 80}}]}]}
        api.render(warm)  # starts the warm workers; not measured

        # 1. the seed's full example through the API
        api.phases.clear()
        jobs: list[dict] = []
        ours, ours_cpu, floor_full, ratios = _paired(
            lambda run: jobs.append(api.render(_renamed(full, run))),
            lambda: encode_floor(full_frames, width, height, tmp / "floor_full.mp4"), "full example", full_frames)
        media_data = jobs[-1]["mediaData"]
        _line("full example via API, submit->done / floor (goal <= 0.8)",
              f"{ours:.2f} s / {floor_full:.2f} s -> {ours / floor_full:.2f} (cpu {ours_cpu:.2f} s; {_ratios(ratios)}; "
              f"output {media_data['width']}x{media_data['height']} {media_data['duration']:.2f} s)")
        _line("  where the time went, s (medians)", _phase_line(api.phases))

        # 2. a text-and-image-only scene: through the API, and the renderer alone
        still = {"width": width, "height": height, "fps": FPS,
                 "scenes": [_text_image_scene(width, height)]}
        still = _local_sources(still, media_url)
        api.phases.clear()
        still_api, _, floor_still, ratios = _paired(
            lambda run: api.render(_renamed(still, run)),
            lambda: encode_floor(still_frames, width, height, tmp / "floor_still.mp4"), "text+image", still_frames)
        _line("text+image 6 s scene via API / floor (goal <= 0.4)",
              f"{still_api:.2f} s / {floor_still:.2f} s -> {still_api / floor_still:.2f} ({_ratios(ratios)})")
        _line("  where the time went, s (medians)", _phase_line(api.phases))
        still_files = _files(still, media)
        direct, direct_cpu, walls = _median_runs(lambda run: _run_checked(_direct_scene(
            still["scenes"][0], width, height, still_files, tmp / f"direct_{run}")))
        _line("  same scene, python -m renderers movie.scene / floor",
              f"{direct:.2f} s / {floor_still:.2f} s -> {direct / floor_still:.2f} (cpu {direct_cpu:.2f} s; "
              f"API overhead {still_api - direct:+.2f} s; {_runs(walls)})")

        # 2b. a busy template scene: 20 video tracks and 100 overlays, within the task's CPU slots
        busy_frames = 4 * FPS
        busy, _, floor_busy, ratios = _paired(
            lambda run: api.render(_local_sources(_many_layers(width, height, run), media_url)),
            lambda: encode_floor(busy_frames, width, height, tmp / "floor_busy.mp4"), "busy scene", busy_frames)
        _line("20 video tracks + 100 overlays, 4 s scene via API / floor",
              f"{busy:.2f} s / {floor_busy:.2f} s -> {busy / floor_busy:.2f} ({_ratios(ratios)})")

        # 3. the same full movie with MoviePy 2
        result = _moviepy(full, files, tmp) if MOVIEPY else "not run (BENCH_MOVIE_MOVIEPY=0)"
        if isinstance(result, str):
            _line("MoviePy 2 full example / ours (goal >= 4)", result)
        else:
            wall, render_s, info = result
            _line("MoviePy 2 full example / ours (goal >= 4)",
                  f"{render_s:.2f} s / {ours:.2f} s -> {render_s / ours:.1f} (MoviePy process {wall:.2f} s incl. "
                  f"imports -> {wall / ours:.1f}; one run; output {_describe(info)})")

        # 4. six scenes with video: one scene worker against two, with the scene thread budget (the default)
        # and without it (a second server, movie_scene_thread_sharing = false), runs alternating
        (tmp / "server_off").mkdir()
        server_off = Server(tmp / "server_off", {"APPLIANCE_CPU_SLOTS": "2",
                                                 "APPLIANCE_MOVIE_SCENE_THREAD_SHARING": "false"})
        servers.append(server_off.start())
        apis = {"shared threads": api, "all threads": _Api(server_off)}
        apis["all threads"].render(warm)
        _six_scene_ratios(apis, width, height, media_url)
    finally:
        for each in servers:
            each.stop()
        httpd.shutdown()
        httpd.server_close()

    # 5. peak memory of one 1080p scene worker (the full example's first scene: video, audio, image, text)
    tree_mb, single_mb, wall = peak_rss(_direct_scene(full["scenes"][0], width, height, files, tmp / "rss_scene"))
    _line("peak RSS of a scene worker, full scene 1 (goal <= 600 MB)",
          f"{tree_mb:.0f} MB process tree (psutil, 10 ms polls); largest process {single_mb:.0f} MB "
          f"(ru_maxrss); {wall:.2f} s")
