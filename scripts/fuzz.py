"""`make fuzz`: Schemathesis against a real server, checking every answer against the OpenAPI document.

A fresh data dir and a free port; a user with a Kodisc, a ViralSync and a RenderCAD key made through the CLI; then
Schemathesis generates requests for every documented operation (valid and invalid ones) and checks that no
answer is a 5xx and that every answer has a documented status, content type and body schema. Bounded in
examples per operation and in time; prints a summary and exits non-zero on any failure.

    .venv/bin/python scripts/fuzz.py [--max-examples N] [--time-limit S] [--seed N] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Production-like URL policy; a rate limit that Schemathesis never reaches; renders cut short so that the
# valid jobs it submits cannot tie up the two cores for long.
SERVER_ENV = {"APPLIANCE_ALLOW_LOOPBACK_TARGETS": "false", "APPLIANCE_ALLOW_HTTP_WEBHOOKS": "false",
              "APPLIANCE_RATE_LIMIT_REQUESTS": "1000000", "APPLIANCE_RENDER_TIMEOUT_S": "10",
              "APPLIANCE_CPU_SLOTS": "1", "APPLIANCE_MEDIA_TIMEOUT_S": "2", "APPLIANCE_MIN_FREE_DISK_MB": "1",
              "APPLIANCE_PRELOAD": "PIL,numpy", "APPLIANCE_MAX_ATTEMPTS": "1",
              "APPLIANCE_MAX_FAILED_JOBS_PER_HOUR": "0"}  # its failing jobs are not what it tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(data_dir: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if proc.returncode:
        sys.exit(f"fuzz: appliance {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def start_server(data_dir: Path, port: int, env: dict) -> subprocess.Popen:
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--data-dir", str(data_dir),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"fuzz: the server exited; see {data_dir / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("fuzz: the server did not become healthy")


def keys(data_dir: Path, env: dict) -> tuple[str, str, str]:
    """(Kodisc, ViralSync, RenderCAD key) of a user on the pro plan (its limits apply) with credits for ~100
    renders."""
    cli(data_dir, env, "init")
    cli(data_dir, env, "users", "create", "fuzz", "--plan", "pro", "--credits", "1000")
    made = [json.loads(cli(data_dir, env, "keys", "create", "--user", "fuzz", "--dialect", d, "--json"))["key"]
            for d in ("kodisc", "viralsync", "rendercad")]
    return made[0], made[1], made[2]


# RenderCAD sends its token as Authorization: Bearer too, so it gets a pass of its own. revoke_api_token is left
# out: a generated token_id may be the fuzz token's own, and every later request would then be a 401.
# Its 32 operations get at most 20 test cases each per phase, so the pass fits its time limit on 2 cores.
PASSES = [("^/(api/v2|v1)/", None, None), ("^/(backend|renders)/", "revoke_api_token", 20)]


def schemathesis(url: str, headers: list[str], include: str, exclude: str | None, examples: int, args,
                 workdir: Path):
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/schema/openapi.json",
               "--checks", CHECKS, "--max-examples", str(examples), "--seed", str(args.seed),
               "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1", "--request-timeout", "30",
               "--generation-with-security-parameters", "false", "--generation-database", "none",
               "--include-path-regex", include, "--suppress-health-check", "all",
               *[arg for h in headers for arg in ("-H", h)], "--no-color",
               *(["--exclude-path-regex", exclude] if exclude else [])]
    # cwd: Schemathesis' own files (reports, caches) go to the scratch dir, never into the repo
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(args.time_limit, proc.kill)
    timer.start()
    lines = []
    for line in proc.stdout:  # shown as it comes, and kept for the summary
        print(line, end="", flush=True)
        lines.append(line)
    timer.cancel()
    code = proc.wait()
    if code == -signal.SIGKILL:
        print(f"fuzz: stopped after the {args.time_limit} s limit")
    return code, "".join(lines)


def summary(output: str) -> dict:
    """Operations, test cases and failures by kind, from the summary Schemathesis prints (its NDJSON and JUnit
    reports give neither the number of test cases nor the passing checks)."""
    tested = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"(\d+) generated", output)
    failures = {name.strip(): int(n) for name, n in re.findall(r"ST\d+ ([^:\n]+): (\d+)", output)}
    return {"operations": int(tested.group(1)) if tested else "?", "cases": int(cases.group(1)) if cases else "?",
            "failures": failures}


def combine(results: list[dict]) -> dict:
    failures: dict[str, int] = {}
    for r in results:
        for kind, n in r["failures"].items():
            failures[kind] = failures.get(kind, 0) + n

    def total(key: str) -> int | str:
        values = [r[key] for r in results]
        return sum(values) if all(isinstance(v, int) for v in values) else "?"

    return {"operations": total("operations"), "cases": total("cases"), "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="test cases per operation and phase")
    parser.add_argument("--time-limit", type=int, default=240, help="seconds for each Schemathesis pass")
    parser.add_argument("--seed", type=int, default=20260428)
    parser.add_argument("--keep", action="store_true", help="keep the scratch data dir and server log")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="appliance-fuzz-"))
    data_dir, port = workdir / "var", free_port()
    data_dir.mkdir()
    env = {**os.environ, **SERVER_ENV, "APPLIANCE_PORT": str(port)}
    kodisc_key, vs_key, rc_key = keys(data_dir, env)
    server = start_server(data_dir, port, env)
    started = time.monotonic()
    headers = [[f"Authorization: Bearer {kodisc_key}", f"x-api-key: {vs_key}"], [f"Authorization: Bearer {rc_key}"]]
    results, code = [], 0
    try:
        for (include, exclude, cap), sent in zip(PASSES, headers, strict=True):
            examples = min(args.max_examples, cap or args.max_examples)
            one_code, output = schemathesis(f"http://127.0.0.1:{port}", sent, include, exclude, examples, args,
                                            workdir)
            code, results = code or one_code, [*results, summary(output)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    result = combine(results)
    server_errors = result["failures"].get("Server error", 0)
    violations = sum(n for kind, n in result["failures"].items() if kind != "Server error")
    print(f"\nfuzz summary: {result['operations']} operations, {result['cases']} test cases in "
          f"{time.monotonic() - started:.0f} s; {server_errors} server errors, {violations} schema violations "
          f"{result['failures'] or ''}(schemathesis exit code {code})")
    if args.keep or code or result["failures"]:
        print(f"fuzz: scratch data dir and server log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if code == 0 and not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
