"""The `appliance` CLI contract (README "CLI"), run as subprocesses against real data dirs and a real server."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from renderers.ffmpeg import probe, video_stream
from tests.conftest import PYTHON, ROOT

KEY_FORMATS = {"kodisc": r"^kdsc_live_[0-9a-f]{48}$", "viralsync": r"^vs_prod_[A-Za-z0-9]{32}$",
               "rendercad": r"^rendercad_[A-Za-z0-9]{32}$"}
ENV = {"APPLIANCE_MIN_FREE_DISK_MB": "1"}
FAILING_SCENE = {"code": "from manim import *\n\nclass Boom(Scene):\n    def construct(self):\n        x = 1 / 0\n",
                 "className": "Boom", "quality": "low", "fps": 5}


def run_cli(data_dir: Path | None, *args: str, env: dict | None = None, cwd: Path = ROOT,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m appliance.cli ARGS [--data-dir D]`; never raises on a non-zero exit."""
    argv = [PYTHON, "-m", "appliance.cli", *args, *(["--data-dir", str(data_dir)] if data_dir else [])]
    # Not APPLIANCE_* settings, nor systemd's markers (a CI runner that is itself a service): `init` would then
    # write its keys to a file instead of printing them.
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("APPLIANCE_") and k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env={**full_env, **ENV, **(env or {})},
                          timeout=timeout)


def ok(data_dir: Path | None, *args: str, **kw) -> str:
    proc = run_cli(data_dir, *args, **kw)
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def server_env(server) -> dict:
    """What a CLI command that talks to the running server needs: its port (README: APPLIANCE_<KEY>)."""
    return {"APPLIANCE_PORT": str(server.port)}


def me(server, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v2/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_users_credits_and_keys(server):
    d = server.data_dir
    out = ok(d, "users", "create", "ada", "--plan", "pro", "--credits", "25")
    assert re.fullmatch(r"usr_[A-Za-z0-9]{18}\n", out), out
    user_id = out.strip()
    ok(d, "users", "create", "bob")
    header, *listing = ok(d, "users", "list").splitlines()
    assert header.split() == ["NAME", "ID", "PLAN", "CREDITS", "DISK"] and len(listing) == 2, (header, listing)
    ada = next(line for line in listing if line.startswith("ada "))
    assert ada.split()[1:4] == [user_id, "pro", "25"] and ada.endswith(" 25 (free 0, paid 25)  0.0 MB"), ada
    bob = next(line for line in listing if line.startswith("bob "))
    assert bob.split()[2:4] == ["studio", "0"], bob
    duplicate = run_cli(d, "users", "create", "ada")
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr and "Traceback" not in duplicate.stderr

    keys = {}
    for dialect, pattern in KEY_FORMATS.items():
        out = ok(d, "keys", "create", "--user", "ada", "--dialect", dialect)
        assert out.endswith("\n") and len(out.splitlines()) == 1, out
        assert re.match(pattern, out.splitlines()[0]), (dialect, out)
        keys[dialect] = out.strip()
    created = json.loads(ok(d, "keys", "create", "--user", "ada", "--dialect", "kodisc", "--json",
                            "--name", "ci"))
    assert list(created) == ["key", "keyId", "webhookSecret"], created
    assert re.match(KEY_FORMATS["kodisc"], created["key"]) and created["keyId"].startswith("key_")
    assert re.fullmatch(r"whsec_[0-9a-f]+", created["webhookSecret"]), created

    listed = ok(d, "keys", "list")
    assert listed.splitlines()[0].split() == ["ID", "DIALECT", "PREFIX", "SCOPE", "NAME", "STATE"]
    assert len(listed.splitlines()) == 1 + 4
    for key in [*keys.values(), created["key"]]:
        assert key[:14] in listed and key not in listed and key[14:] not in listed
    assert created["keyId"] in listed and " ci " in listed and "live" in listed
    assert ok(d, "keys", "list", "--user", "bob") == ""  # no rows: no header either

    body = me(server, created["key"]).json()
    assert body["keyId"] == created["keyId"] and body["credits"] == {"paid": 25, "free": 0, "total": 25}
    balance = json.loads(ok(d, "credits", "grant", "--user", "ada", "15"))
    assert balance == {"paid": 40, "free": 0, "total": 40}
    ok(d, "credits", "grant", "--user", "ada", "5", "--bucket", "free")
    assert me(server, keys["kodisc"]).json()["credits"] == {"paid": 40, "free": 5, "total": 45}
    assert " 45 (free 5, paid 40)" in ok(d, "users", "list")

    assert ok(d, "keys", "revoke", created["keyId"]) == ""
    r = me(server, created["key"])
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert me(server, keys["kodisc"]).status_code == 200  # only that key
    revoked = next(line for line in ok(d, "keys", "list").splitlines() if line.startswith(created["keyId"]))
    assert "revoked" in revoked and created["key"] not in revoked
    missing = run_cli(d, "keys", "revoke", "key_0000000000000000")
    assert missing.returncode == 2 and "no key with id" in missing.stderr


def test_unknown_user_exits_2_with_a_readable_message(tmp_path):
    d = tmp_path / "var"
    ok(d, "users", "create", "ada")
    for args in (("keys", "create", "--user", "ghost", "--dialect", "kodisc"),
                 ("credits", "grant", "--user", "ghost", "5"),
                 ("keys", "list", "--user", "ghost"),
                 ("users", "plan", "ghost", "pro")):
        proc = run_cli(d, *args)
        assert proc.returncode == 2, (args, proc)
        assert proc.stdout == "" and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip() == ("appliance: no user named 'ghost' (create it with: appliance users create "
                                       "ghost)"), (args, proc.stderr)
    assert "ghost" not in ok(d, "users", "list")


def test_init_creates_admin_once_and_prints_one_key_per_dialect(tmp_path):
    d = tmp_path / "fresh"
    first = ok(d, "init")
    lines = first.splitlines()
    assert lines[0].startswith("Created user 'admin'"), first
    printed = dict(line.split() for line in lines[1:] if line.startswith("  "))
    assert set(printed) == set(KEY_FORMATS)
    for dialect, key in printed.items():
        assert re.match(KEY_FORMATS[dialect], key), (dialect, key)
    users = ok(d, "users", "list").splitlines()[1:]
    assert len(users) == 1 and users[0].startswith("admin ") and users[0].split()[2] == "studio"
    assert users[0].endswith(" 1000 (free 1000, paid 0)  0.0 MB"), users
    assert len(ok(d, "keys", "list").splitlines()) == 1 + 3

    assert ok(d, "init") == ""  # a second init prints nothing and creates nothing
    assert ok(d, "users", "list").splitlines()[1:] == users
    assert len(ok(d, "keys", "list").splitlines()) == 1 + 3


def test_the_data_dir_comes_from_the_environment(tmp_path):
    d, cwd = tmp_path / "from-env", tmp_path / "cwd"
    cwd.mkdir()
    env = {"APPLIANCE_DATA_DIR": str(d)}
    assert ok(None, "users", "create", "envuser", env=env, cwd=cwd).startswith("usr_")
    assert (d / "appliance.db").is_file()
    assert not (cwd / "var").exists()  # not the ./var default
    assert "envuser" in ok(None, "users", "list", env=env, cwd=cwd)
    assert "envuser" in ok(d, "users", "list", cwd=cwd)
    # an explicit --data-dir wins over the environment
    other = tmp_path / "flag"
    ok(other, "users", "create", "flaguser", env=env, cwd=cwd)
    assert "flaguser" not in ok(None, "users", "list", env=env, cwd=cwd)


def test_jobs_list_show_and_cancel(server):
    d = server.data_dir
    ok(d, "users", "create", "u", "--credits", "100")
    key = json.loads(ok(d, "keys", "create", "--user", "u", "--dialect", "kodisc", "--json"))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    job_id = httpx.post(f"{server.url}/api/v2/render", json=FAILING_SCENE, headers=auth, timeout=10).json()["jobId"]
    failed = server.wait(job_id)
    assert failed["status"] == "failed"

    header, *rows = ok(d, "jobs", "list").splitlines()
    assert header.split() == ["ID", "DIALECT", "KIND", "STATUS", "DONE", "CREATED", "ERROR"], header
    row = next(line for line in rows if line.startswith(job_id))
    assert row.split()[1:4] == ["kodisc", "manim", "failed"], row
    assert "ZeroDivisionError: division by zero (scene line 5)" in row
    shown = json.loads(ok(d, "jobs", "show", job_id))
    assert shown["id"] == job_id and shown["dialect"] == "kodisc" and shown["status"] == "failed"
    assert shown["error"] == "ZeroDivisionError: division by zero (scene line 5)"
    assert [(t["name"], t["renderer"], t["status"]) for t in shown["tasks"]] == [("render", "manim", "failed")]
    unknown = run_cli(d, "jobs", "show", "cnothere")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "appliance: no job cnothere"

    sleeper = server.submit("u", "test.sleep", {"seconds": 30})
    server.wait(sleeper, statuses=("running",), timeout=30)
    running = ok(d, "jobs", "list", "--status", "running")
    assert sleeper in running and job_id not in running
    cancelled = json.loads(ok(d, "jobs", "cancel", sleeper, env=server_env(server)))
    assert cancelled["id"] == sleeper and cancelled["status"] == "cancelled", cancelled
    job = server.wait(sleeper, timeout=10)
    assert job["status"] == "cancelled" and job["error"] == "cancelled"
    assert [t["status"] for t in job["tasks"]] == ["cancelled"]
    assert job["durationMs"] < 20_000
    again = run_cli(d, "jobs", "cancel", sleeper, env=server_env(server))
    assert again.returncode == 2 and "has already ended" in again.stderr
    row = next(line for line in ok(d, "jobs", "list").splitlines() if line.startswith(sleeper))
    assert row.split()[1:4] == ["admin", "tasks", "cancelled"], row  # kind = the pipeline


def test_jobs_cancel_without_a_server_says_so(tmp_path):
    d = tmp_path / "var"
    ok(d, "users", "create", "u")
    proc = run_cli(d, "jobs", "cancel", "job_000000000000", env={"APPLIANCE_PORT": "9"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("appliance: no admin token in"), proc.stderr  # no server ever ran here
    (d / "admin.token").write_text("stale")  # a server ran here once, but none listens now
    proc = run_cli(d, "jobs", "cancel", "job_000000000000", "--port", "9")
    assert proc.returncode == 2 and proc.stderr.startswith("appliance: no server at http://127.0.0.1:9/admin")


def test_server_commands_on_a_missing_data_dir_fail_readably(tmp_path):
    proc = run_cli(tmp_path / "nowhere", "jobs", "cancel", "job_000000000000", env={"APPLIANCE_PORT": "9"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_render_of_a_missing_file_fails_readably(tmp_path):
    d = tmp_path / "var"
    ok(d, "users", "create", "u")
    proc = run_cli(d, "render", str(tmp_path / "missing.py"), env={"APPLIANCE_PORT": "9"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_doctor_reports_ok_for_every_dependency(tmp_path):
    proc = run_cli(tmp_path / "var", "doctor")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    checks = {line[5:].split(None, 1)[0] if not line[5:].startswith("free disk") else "free disk": line
              for line in lines if line.startswith(("OK ", "FIX "))}
    for what in ("ffmpeg", "ffprobe", "Manim", "LaTeX", "dvisvgm", "sandbox", "capacity", "free disk"):
        assert what in checks, (what, proc.stdout)
        assert checks[what].startswith("OK "), checks[what]
    assert "namespaces" in checks["sandbox"] and "rlimits only" not in checks["sandbox"]
    assert re.search(r"\d+ CPU slots, \d+ MB for tasks", checks["capacity"]), checks["capacity"]
    assert re.search(r"\d+ MB in ", checks["free disk"]), checks["free disk"]
    assert not any(line.startswith("FIX") for line in lines), proc.stdout


@pytest.mark.slow
def test_render_a_scene_file_against_the_running_server(server, tmp_path):
    d = server.data_dir
    ok(d, "init")
    scene = tmp_path / "tiny_scene.py"
    scene.write_text(textwrap.dedent("""\
        from manim import *


        class TinyDot(Scene):
            def construct(self):
                self.add(Dot(color=RED))
                self.wait(0.2)


        class Helper:
            pass


        class Other(MovingCameraScene):
            def construct(self):
                self.wait(0.2)
        """))
    several = run_cli(d, "render", str(scene), env=server_env(server))  # two scenes: which one?
    assert several.returncode == 2 and several.stdout == "", several
    assert several.stderr.strip() == ("appliance: tiny_scene.py holds 2 scenes: TinyDot, Other; pick one with "
                                      "--scene NAME"), several.stderr
    missing = run_cli(d, "render", str(scene), "--scene", "Nope", env=server_env(server))
    assert missing.returncode == 2 and "has no scene 'Nope'; its scenes: TinyDot, Other" in missing.stderr
    proc = run_cli(d, "render", str(scene), "--scene", "TinyDot", "--quality", "low", env=server_env(server))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    paths = [Path(line) for line in proc.stdout.splitlines()]  # stdout: the local paths, one a line
    assert {p.name for p in paths} == {"video.mp4", "thumb.jpg", "captions.vtt", "image.png"}, proc.stdout
    job_id = paths[0].parent.name
    assert all(p.parent == d / "outputs" / job_id and p.is_file() for p in paths), paths
    urls = [line.strip() for line in proc.stderr.splitlines() if "/r/" in line]  # stderr: the URLs
    assert sorted(urls) == [f"http://127.0.0.1:{server.port}/r/{job_id}/{name}"
                            for name in ("captions.vtt", "image.png", "thumb.jpg", "video.mp4")], proc.stderr
    assert "completed" in proc.stderr and "100%" in proc.stderr and "\r" not in proc.stderr  # no terminal
    video = tmp_path / "video.mp4"
    video.write_bytes(httpx.get(next(u for u in urls if u.endswith(".mp4")), timeout=30).content)
    assert video.read_bytes() == next(p for p in paths if p.name == "video.mp4").read_bytes()
    stream = video_stream(probe(video))
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p"), stream
    assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (854, 480, "15/1")  # --quality low
    assert server.job(job_id)["status"] == "completed"
    # the scene again with one more animation: the first is copied from the render above, and the CLI says so
    scene.write_text(scene.read_text().replace("self.add(Dot(color=RED))\n        self.wait(0.2)\n",
                                               "self.add(Dot(color=RED))\n        self.wait(0.2)\n"
                                               "        self.play(FadeIn(Square()), run_time=0.2)\n", 1))
    again = run_cli(d, "render", str(scene), "--scene", "TinyDot", "--quality", "low", env=server_env(server))
    assert again.returncode == 0 and "reused 1 of 2 pieces of earlier renders" in again.stderr, again.stderr

    bad = tmp_path / "bad_scene.py"
    bad.write_text("from manim import *\n\nclass Bad(Scene):\n    def construct(self):\n"
                   "        self.add(Circle())\n        raise ValueError('no circles today')\n")
    proc = run_cli(d, "render", str(bad), env=server_env(server))
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert "failed: ValueError: no circles today (scene line 6)" in proc.stderr, proc.stderr

    ghost = run_cli(d, "render", str(scene), "--scene", "TinyDot", "--user", "ghost", env=server_env(server))
    assert ghost.returncode == 2 and ghost.stdout == "" and "Traceback" not in ghost.stderr
    assert ghost.stderr.strip() == "appliance: no user 'ghost'", ghost.stderr
    not_py = tmp_path / "scene.txt"
    not_py.write_text("nothing")
    proc = run_cli(d, "render", str(not_py), env=server_env(server))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.match(r"appliance: appliance render takes a Manim scene.*\(\.py\)", proc.stderr), proc.stderr


def test_healthz_and_openapi(server):
    r = httpx.get(f"{server.url}/healthz", timeout=10)
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ok" and health["queue"] == {"queued": 0, "running": 0}
    assert {"cpu", "memMb", "gpu"} <= set(health["capacity"]) and health["capacity"]["cpu"] > 0
    assert "namespaces" in health["sandbox"]
    r = httpx.get(f"{server.url}/schema/openapi.json", timeout=10)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v2/render" in paths and "post" in paths["/api/v2/render"]
    assert "/api/v2/render/{job_id}" in paths and "/api/v2/me" in paths


def test_bad_names_and_credit_amounts_are_refused(server):
    for args in (("users", "create", ""), ("users", "create", "a b"), ("users", "create", "x", "--credits", "-7")):
        proc = subprocess.run([PYTHON, "-m", "appliance.cli", *args, "--data-dir", str(server.data_dir)],
                              capture_output=True, text=True, env=server.env)
        assert proc.returncode == 2 and proc.stderr.startswith("appliance: "), (args, proc.stderr)
    server.cli("users", "create", "ada")
    for amount in ("0", "-5"):
        proc = subprocess.run([PYTHON, "-m", "appliance.cli", "credits", "grant", "--user", "ada",
                               amount, "--data-dir", str(server.data_dir)], capture_output=True, text=True,
                              env=server.env)
        assert proc.returncode == 2 and "positive" in proc.stderr, proc.stderr


def test_backup_shows_a_percentage_line_on_a_terminal(tmp_path):
    d = tmp_path / "var"
    ok(d, "users", "create", "u")
    main, child = pty.openpty()
    try:
        argv = [PYTHON, "-m", "appliance.cli", "backup", str(tmp_path / "bk"), "--data-dir", str(d)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=child, text=True, timeout=120)
        os.close(child)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO once the other side is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0 and proc.stdout.startswith("backed up "), proc
    text = seen.decode()
    assert text.startswith("\r") and "100% done" in text, text  # rewritten in place, ends at 100 %


@pytest.mark.parametrize("answer", [b'{"proof": "0000"}', b"<html>not json</html>"], ids=["rogue-json", "not-json"])
def test_the_admin_token_goes_only_to_the_server_of_the_data_dir(tmp_path, answer):
    """Issue #17 item 9: `jobs cancel` sent the data dir's admin token to whatever listened on the configured
    port, and crashed on a non-JSON answer. Now the server must prove it holds the token first."""
    d = tmp_path / "var"
    d.mkdir()
    (d / "admin.token").write_text("s3cret-admin-token")
    seen: list[str] = []

    class Rogue(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.append(f"{self.path} {self.headers}")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer)
        do_POST = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass
    rogue = ThreadingHTTPServer(("127.0.0.1", 0), Rogue)
    threading.Thread(target=rogue.serve_forever, daemon=True).start()
    try:
        proc = run_cli(d, "jobs", "cancel", "job_000000000000", env={"APPLIANCE_PORT": str(rogue.server_port)})
    finally:
        rogue.shutdown()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "not the appliance serving" in proc.stderr or "no JSON" in proc.stderr, proc.stderr
    assert seen and not any("s3cret-admin-token" in request for request in seen), seen
