"""The CLI as a new engineer meets it (issue #21 item 5): help on every command and option, list tables whose
columns hold their values (sized to content: RenderCAD ids are long), `operator add` asking again on a terminal,
and a first-run hint that names the command that works here. Subprocesses against real data dirs and a server."""
from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import PYTHON, ROOT
from tests.integration.test_cli import ok, run_cli
from tests.integration.test_rendercad_render import photo

VENV_BIN = Path(PYTHON).parent
EXEMPT: set[tuple[str, str]] = set()  # (command, option) without help text: none


def columns(header: str, line: str, names: list[str]) -> dict[str, str]:
    """The value under each named (left-aligned) header: the text from the header's column to the next one's."""
    starts = [header.index(f"{n}") for n in names]
    ends = [*starts[1:], None]
    return {n: line[s:e].strip() for n, s, e in zip(names, starts, ends, strict=True)}


def test_every_command_and_option_has_help():
    from appliance.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(" ".join((*path, name)))
                    walk(sub, (*path, name))
            elif not action.help and action.dest != "help":
                flag = action.option_strings[-1] if action.option_strings else action.dest
                if (path[-1], flag) not in EXEMPT:
                    missing.append(f"{' '.join(path)} {flag}")

    walk(build_parser(), ())
    assert not missing, f"no help text: {missing}"
    shown = ok(None, "users", "--help")  # what a person types first
    assert "create" in shown and "add a user" in shown and "list users with plans and balances" in shown
    assert re.search(r"--credits CREDITS +paid credits to grant", ok(None, "users", "create", "--help"))


def test_list_values_sit_under_their_headers(server):
    d = server.data_dir
    ok(d, "users", "create", "ada", "--plan", "pro", "--credits", "25")
    ok(d, "users", "create", "a-much-longer-user-name-than-sixteen")
    header, *listing = ok(d, "users", "list").splitlines()
    ada = columns(header, next(line for line in listing if line.startswith("ada ")), ["NAME", "ID", "PLAN",
                                                                                       "CREDITS", "DISK"])
    assert ada["PLAN"] == "pro" and ada["CREDITS"] == "25 (free 0, paid 25)" and ada["DISK"] == "0.0 MB", ada
    long = columns(header, listing[-1], ["NAME", "ID", "PLAN", "CREDITS", "DISK"])
    assert long["NAME"] == "a-much-longer-user-name-than-sixteen" and long["PLAN"] == "studio", long

    ok(d, "keys", "create", "--user", "ada", "--dialect", "rendercad", "--name", "plugin")
    rc_key = ok(d, "keys", "create", "--user", "ada", "--dialect", "rendercad").strip()
    header, *keys = ok(d, "keys", "list").splitlines()
    names = ["ID", "DIALECT", "PREFIX", "SCOPE", "NAME", "STATE"]
    assert [columns(header, line, names)["DIALECT"] for line in keys] == ["rendercad"] * 2
    assert {columns(header, line, names)["NAME"] for line in keys} == {"plugin", "-"}

    # a RenderCAD job (a render_… id, longer than a Kodisc one) and a Kodisc-style one, in one table
    auth = {"Authorization": f"Bearer {rc_key}"}
    base = f"{server.url}/backend/render.php?action="
    rc_id = httpx.post(base + "create_job", json={"model": "classic"}, headers=auth, timeout=10).json()["job_id"]
    url = httpx.post(base + "presign_upload", json={"job_id": rc_id, "slot": "input_main",
                                                    "content_type": "image/jpeg"}, headers=auth, timeout=10)
    put = httpx.put(url.json()["presigned_url"], content=photo(size=(320, 240)),
                    headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert put.status_code == 200
    assert httpx.post(base + "finalize_job", json={"job_id": rc_id}, headers=auth, timeout=10).status_code == 200
    short_id = server.submit("ada", "test.noop")
    assert len(rc_id) > len(short_id)
    header, *jobs = ok(d, "jobs", "list").splitlines()
    names = ["ID", "DIALECT", "KIND", "STATUS"]
    rows = {columns(header, line, names)["ID"]: columns(header, line, names) for line in jobs}
    assert rows[rc_id]["DIALECT"] == "rendercad" and rows[rc_id]["KIND"] == "image", rows
    assert rows[short_id]["DIALECT"] == "admin" and rows[short_id]["KIND"] == "tasks", rows
    created = header.index("CREATED")
    for line in jobs:  # DONE is right-aligned just before CREATED; CREATED starts where its header does
        assert line[created - 2:created] == "  " and line[created:created + 2] == "20", (header, line)
        assert line[:created].rstrip().endswith("%"), line


def _interactive(argv: list[str], answers: list[str], env: dict, timeout: float = 60) -> tuple[int, str]:
    """Run argv on a pseudo-terminal (its controlling terminal, as a person's shell would), typing each answer
    after the next prompt that ends in ': '. Returns (exit status, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its stdin, stdout, stderr and /dev/tty
        os.chdir(ROOT)
        os.execve(argv[0], argv, env)
    seen, typed, deadline = b"", 0, time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if typed < len(answers) and seen.count(b": ") > typed:
                os.write(fd, answers[typed].encode() + b"\n")
                typed += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_operator_add_asks_again_on_a_terminal(tmp_path):
    d = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    argv = [PYTHON, "-m", "appliance.cli", "operator", "add", "alice", "--data-dir", str(d)]
    # too short, then two that differ, then a good one twice: added on the third try
    code, text = _interactive(argv, ["short", "long enough 1", "long enough 2", "long enough 3",
                                     "long enough 3"], env)
    assert code == 0, text
    assert "at least 10 characters; try again (2 tries left)" in text, text
    assert "the two passwords differ; try again (1 try left)" in text, text
    assert "operator alice added" in text
    header, row = ok(d, "operator", "list").splitlines()
    assert header.split()[:2] == ["NAME", "CREATED"] and row.startswith("alice ")
    # three bad tries: it stops, saying why, and adds nobody
    code, text = _interactive([*argv[:5], "bob", *argv[6:]], ["tiny", "tiny2", "tiny3"], env)
    assert code == 2 and "appliance: the password must have at least 10 characters (3 tries)" in text, text
    assert "bob" not in ok(d, "operator", "list")
    # stdin that is not a terminal: one line, no prompt, no second chance
    piped = subprocess.run([*argv[:5], "carol", *argv[6:]], input="short\nlong enough 4\n", capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=60)
    assert piped.returncode == 2 and "at least 10 characters" in piped.stderr and "try again" not in piped.stderr


def test_first_run_hint_names_the_command_that_works(tmp_path):
    plain_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                 if Path(p).resolve() != VENV_BIN.resolve())
    out = ok(tmp_path / "a", "init", env={"PATH": plain_path})  # `make run`: .venv/bin is not on PATH
    assert f"{VENV_BIN.relative_to(ROOT)}/appliance operator add NAME" in out, out
    assert (ROOT / VENV_BIN.relative_to(ROOT) / "appliance").is_file()
    out = ok(tmp_path / "b", "init", env={"PATH": f"{VENV_BIN}{os.pathsep}{plain_path}"})  # an activated venv
    assert "create a dashboard operator with: appliance operator add NAME" in out, out
    listed = run_cli(tmp_path / "b", "operator", "list", env={"PATH": plain_path})
    assert listed.stdout == "" and ".venv/bin/appliance operator add NAME" in listed.stderr
