"""Screenshots of the dashboard for the README: docs/screenshots/{signin,jobs,job,job-live,capacity,users}.png.

Starts a server on a free port with a fresh data dir, an operator, a few users and demo jobs (a finished Manim
render, one still rendering, a failed and a cancelled one, test jobs), then drives Debian's headless Chromium
(/usr/bin/chromium through /usr/bin/chromedriver; nothing is downloaded) over the main pages.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--keep]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "screenshots-only-password"
SCENE = ("from manim import *\n\nclass Demo(Scene):\n    def construct(self):\n"
         "        self.play(Create(Circle(color=BLUE).scale(2)), Write(Text('render appliance').shift(DOWN * 2.8)))\n"
         "        self.play(Transform(Circle(color=BLUE).scale(2), Square(color=YELLOW).scale(2)), run_time=1)\n")
# Still rendering when the pictures are taken: ten finished animations, playable on the job page while it renders
# (the live player, renderers/manim_live.py), then a long pause.
HOLD = ("import time\nfrom manim import *\n\nclass Hold(Scene):\n    def construct(self):\n"
        "        star = Star(color=GOLD, fill_opacity=0.8).scale(2.5)\n"
        "        self.play(GrowFromCenter(star), run_time=1)\n"
        "        for i in range(10):\n"
        "            self.play(star.animate.rotate(0.3).set_color([GOLD, ORANGE, RED, PINK][i % 4]), run_time=1)\n"
        "        time.sleep(600)\n")
MAX_BYTES = 300 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], cwd=ROOT, env=env, input=stdin, text=True,
                          check=True, capture_output=True).stdout


class Demo:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir), "APPLIANCE_PORT": str(self.port),
                    "APPLIANCE_MIN_FREE_DISK_MB": "1", "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "true",
                    "APPLIANCE_ALLOW_HTTP_WEBHOOKS": "true",
                    "APPLIANCE_WEBHOOK_RETRY_SCALE": "0.01"}
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.keys: dict[str, str] = {}

    def start(self) -> None:
        cli(self.env, "init")
        self.keys = {dialect: cli(self.env, "keys", "create", "--user", "admin", "--dialect", dialect).strip()
                     for dialect in ("kodisc", "viralsync")}
        cli(self.env, "operator", "add", "ops", stdin=PASSWORD + "\n")
        for name, plan, credits in (("studio-a", "pro", "500"), ("freelancer", "free", "40")):
            cli(self.env, "users", "create", name, "--plan", plan, "--credits", credits)
        cli(self.env, "keys", "create", "--user", "studio-a", "--dialect", "viralsync", "--name", "editor")
        cli(self.env, "keys", "create", "--user", "freelancer", "--dialect", "rendercad", "--name", "sketchup")
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=log)
        for _ in range(600):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not start: see " + str(self.data_dir / "server.log"))

    def submit(self, user: str, tasks: list[dict]) -> str:
        token = (self.data_dir / "admin.token").read_text().strip()
        r = httpx.post(self.url + "/admin/jobs", json={"user": user, "tasks": tasks},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        r.raise_for_status()
        return r.json()["id"]

    def wait(self, job_id: str, statuses: tuple[str, ...]) -> None:
        token = (self.data_dir / "admin.token").read_text().strip()
        for _ in range(1200):
            job = httpx.get(f"{self.url}/admin/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).json()
            if job["status"] in statuses:
                return
            time.sleep(0.2)
        raise SystemExit(f"job {job_id} never reached {statuses}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def manim(code: str, name: str, width: int = 640, height: int = 360) -> dict:
    return {"renderer": "manim", "mem_mb": 1024,
            "input": {"code": code, "className": name, "width": width, "height": height, "fps": 15}}


def demo_jobs(demo: Demo) -> tuple[str, str]:
    """A Kodisc render (with a webhook that nothing answers), a ViralSync movie, test jobs that fail, finish and
    are cancelled, and two still running: a Manim scene resting on its last frame and a long test job."""
    kodisc = {"Authorization": f"Bearer {demo.keys['kodisc']}"}
    r = httpx.post(demo.url + "/api/v2/render", headers=kodisc, timeout=30, json={
        "code": SCENE, "className": "Demo", "quality": "low", "webhookUrl": f"http://127.0.0.1:{free_port()}/hook"})
    r.raise_for_status()
    done = r.json()["jobId"]
    movie = json.loads((ROOT / "examples" / "viralsync-minimal.json").read_text())
    movie["movie"].update(width=640, height=360)
    httpx.post(demo.url + "/v1/render/jobs", headers={"x-api-key": demo.keys["viralsync"]}, json=movie,
               timeout=30).raise_for_status()
    demo.submit("admin", [{"renderer": "test.noop", "input": {}}])
    demo.submit("freelancer", [{"renderer": "test.fail", "input": {
        "message": "scene 'intro': layer 'logo' source was not provided"}}])
    cancelled = demo.submit("admin", [{"renderer": "test.sleep", "input": {"seconds": 60}}])
    demo.wait(done, ("completed", "failed"))
    token = (demo.data_dir / "admin.token").read_text().strip()
    httpx.post(f"{demo.url}/admin/jobs/{cancelled}/cancel", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    running = demo.submit("studio-a", [manim(HOLD, "Hold")])
    demo.submit("freelancer", [{"renderer": "test.sleep", "input": {"seconds": 600}}])
    demo.wait(running, ("running",))
    time.sleep(2)  # the webhook's first attempt has been refused
    return done, running


def browser():
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,860",
                "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def save(driver, path: Path) -> None:
    """A PNG of the page, quantised if need be to stay under MAX_BYTES (the README carries it)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:
        image.quantize(colors=128).save(path, optimize=True)
    print(f"{path} {path.stat().st_size // 1024} KB")


def shoot(demo: Demo, out: Path, done: str, running: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser()
    wait = WebDriverWait(d, 60)
    try:
        d.get(demo.url + "/")
        save(d, out / "signin.png")
        d.find_element(By.NAME, "name").send_keys("ops")
        d.find_element(By.NAME, "password").send_keys(PASSWORD)
        d.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]"))
        time.sleep(1)
        save(d, out / "jobs.png")
        d.get(f"{demo.url}/dashboard/jobs/{done}")
        wait.until(lambda d: d.execute_script("const v = document.getElementById('preview-video');"
                                              "return v && v.readyState >= 2"))
        d.execute_script("const v = document.getElementById('preview-video'); v.currentTime = v.duration * 0.6;")
        time.sleep(1)
        save(d, out / "job.png")
        d.get(f"{demo.url}/dashboard/jobs/{running}")
        WebDriverWait(d, 120).until(lambda d: d.execute_script(  # the live player, a few seconds into the stream
            "const v = document.getElementById('live-video');"
            "return v && !v.hidden && v.readyState >= 2 && v.currentTime > 2.5"))
        d.execute_script("document.getElementById('live-video').pause()")
        save(d, out / "job-live.png")
        d.get(demo.url + "/dashboard/capacity")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#layers tbody tr"))
        save(d, out / "capacity.png")
        d.get(demo.url + "/dashboard/users")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.user"))
        save(d, out / "users.png")
    finally:
        d.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--keep", action="store_true", help="keep the demo data dir")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="appliance-screens-"))
    demo = Demo(data_dir)
    try:
        demo.start()
        done, running = demo_jobs(demo)
        shoot(demo, out, done, running)
    finally:
        demo.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
