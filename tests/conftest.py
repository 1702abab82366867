"""Shared fixtures: a real appliance server in a subprocess on a free port, with its own data dir."""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# A CI runner may itself be a systemd service; `appliance init` would then write the first-run keys to a file
# instead of printing them (appliance/cli/install.py). Tests read them from stdout, so the suite is never "under
# systemd"; test_service_units sets INVOCATION_ID itself where it checks that behaviour.
for _var in ("INVOCATION_ID", "JOURNAL_STREAM"):
    os.environ.pop(_var, None)
PYTHON = sys.executable


def _share_tls_contexts() -> None:
    """Every httpx client of the tests and benches (``httpx.get`` makes one per call) shares one TLS context per
    setting: building one loads certifi's CA bundle, about 60 ms of CPU on the reference box. Per request, that
    slowed the polling loops of the suite and went into the benches' latency figures (submit -> start measured
    57.6 ms, of which 55 were the client's). Nothing changes for the servers under test: they run in their own
    processes. Semantics are kept: a client that passes its own ``verify`` gets a context for exactly that."""
    from httpx._transports import default

    build = getattr(default, "create_ssl_context", None)
    if build is None:  # a newer httpx moved it: the tests are slower, not wrong
        return
    cache: dict = {}

    def shared(verify=True, cert=None, trust_env=True):
        key = (id(verify) if not isinstance(verify, (bool, str)) else verify, cert, trust_env)
        if key not in cache:
            cache[key] = (verify, build(verify=verify, cert=cert, trust_env=trust_env))
        return cache[key][1]

    default.create_ssl_context = shared


_share_tls_contexts()


def until(condition, what: str, timeout: float = 30):
    """Wait for a condition the server reaches within moments, polled; never a fixed sleep. Returns the
    condition's first true value. ``timeout`` is a ceiling for a quiet machine, not a measurement."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(data_dir: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run([PYTHON, "-m", "appliance.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"appliance {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


_USERS = itertools.count(1)


class Server:
    def __init__(self, data_dir: Path, env: dict | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "true", "APPLIANCE_ALLOW_HTTP_WEBHOOKS": "true",
                    "APPLIANCE_WEBHOOK_RETRY_SCALE": "0.01", "APPLIANCE_MIN_FREE_DISK_MB": "1",
                    "APPLIANCE_PORT": str(self.port),
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.user: str | None = None  # the latest fresh_user()

    def start(self, timeout: float = 60) -> Server:
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "appliance.cli", "serve", "--data-dir", str(self.data_dir),
                                      "--port", str(self.port)], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {(self.data_dir / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.03)
        raise AssertionError("server did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str) -> str:
        return cli(self.data_dir, *args, env=self.env)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of the server's own database, read-only (what a test waits on: a delivery attempt, a task's pid)."""
        db = sqlite3.connect(f"file:{self.data_dir / 'appliance.db'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def admin_headers(self) -> dict:
        token = (self.data_dir / "admin.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def submit(self, user: str, renderer: str | None = None, input: dict | None = None, **extra) -> str:
        body = {"user": user, **({"renderer": renderer, "input": input or {}} if renderer else {}), **extra}
        r = httpx.post(self.url + "/admin/jobs", json=body, headers=self.admin_headers(), timeout=10)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        r = httpx.get(f"{self.url}/admin/jobs/{job_id}", headers=self.admin_headers(), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach {statuses}: {json.dumps(self.job(job_id))}")

    def add_operator(self, name: str = "ops", password: str = "correct horse battery staple") -> None:
        """A dashboard operator (test_dashboard.PASSWORD by default), made through the CLI."""
        subprocess.run([PYTHON, "-m", "appliance.cli", "operator", "add", name, "--data-dir", str(self.data_dir)],
                       input=password + "\n", text=True, check=True, cwd=ROOT, env=self.env, capture_output=True)

    def kodisc_render(self, code: str, class_name: str, user: str = "ada", fps: int = 10) -> tuple[dict, str]:
        """A new user with credits renders a scene through the Kodisc API at low quality: (its key's headers,
        the job id)."""
        self.cli("users", "create", user, "--credits", "1000")
        auth = {"Authorization": f"Bearer {self.new_key(user, 'kodisc')['key']}"}
        r = httpx.post(f"{self.url}/api/v2/render", headers=auth, timeout=30,
                       json={"code": code, "className": class_name, "quality": "low", "fps": fps})
        assert r.status_code == 202, r.text
        return auth, r.json()["jobId"]

    def fresh_user(self, credits: int | None = None, prefix: str = "ada") -> str:
        """A user no other test has (tests that share a server each make their own: own credits, plan, cache,
        job list and rate limits), created through the CLI; its name."""
        self.user = f"{prefix}{next(_USERS)}"
        self.cli("users", "create", self.user, *(["--credits", str(credits)] if credits is not None else []))
        return self.user

    def new_key(self, user: str, dialect: str, **opts: str) -> dict:
        args = ["keys", "create", "--user", user, "--dialect", dialect, "--json"]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", v]
        return json.loads(self.cli(*args))


def frame_hashes(video: bytes | Path) -> list[str]:
    """The SHA-256 of each decoded frame (YUV 4:2:0), in order: two videos show the same frames, or not."""
    import hashlib
    import io

    import av

    with av.open(io.BytesIO(video) if isinstance(video, bytes) else str(video)) as container:
        return [hashlib.sha256(f.to_ndarray(format="yuv420p").tobytes()).hexdigest()
                for f in container.decode(video=0)]


def _servers(base: Path):
    servers: list[Server] = []

    def factory(env: dict | None = None, data_dir: Path | None = None, start: bool = True) -> Server:
        d = data_dir or base / f"var{len(servers)}"
        d.mkdir(parents=True, exist_ok=True)
        server = Server(d, env)
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture
def make_server(tmp_path):
    yield from _servers(tmp_path)


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory):
    """make_server for the tests of a module that share one server: each asserts only on what it made itself
    (its own user, key or job), never on the server's totals. A server start is a second of the suite's time."""
    yield from _servers(tmp_path_factory.mktemp("servers"))


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


# ---- the browser (dashboard tests) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for (or download) a browser
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (scripts/install-apt.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def wait_for(driver, check, timeout: float = 120, what: str = ""):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        lambda d: check(d), message=what)
