"""The operator dashboard: a real server on a free port, real HTTP, and Debian's headless Chromium (Selenium with
/usr/bin/chromedriver; nothing downloads a browser). One server and one browser session for the whole module."""
from __future__ import annotations

import io
import json
import re
import signal

import httpx
import pytest
from PIL import Image

from tests.conftest import Server, free_port, wait_for

PASSWORD = "correct horse battery staple"
# A real Manim task that renders a frame, then holds the task open: its live frame can be watched, then cancelled.
HOLDING_SCENE = ("import time\nfrom manim import *\n\nclass Hold(Scene):\n    def construct(self):\n"
                 "        self.play(FadeIn(Square(color=RED, fill_opacity=1)), run_time=0.3)\n"
                 "        time.sleep(300)\n")
TINY_SCENE = ("from manim import *\n\nclass Tiny(Scene):\n    def construct(self):\n"
              "        self.play(Create(Circle()), run_time=1)\n")


def with_operator(data_dir) -> Server:
    """A started server after `appliance init` and an operator "ops" with PASSWORD (the dashboard tests')."""
    srv = Server(data_dir)
    srv.cli("init")
    srv.add_operator(password=PASSWORD)
    return srv.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = with_operator(tmp_path_factory.mktemp("dashboard"))
    yield srv
    srv.stop(signal.SIGKILL)


def manim_job(server: Server, code: str, class_name: str, width: int, height: int) -> str:
    task = {"renderer": "manim", "mem_mb": 1024, "input": {"code": code, "className": class_name, "width": width,
                                                           "height": height, "fps": 10}}
    return server.submit("admin", tasks=[task])


def signed_in(server: Server) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=10)
    r = client.post("/dashboard/login", data={"name": "ops", "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/jobs"
    page = client.get("/dashboard/jobs")
    return client, re.search(r'name="csrf-token" content="([^"]+)"', page.text)[1]


# ---- HTTP: sign-in, CSRF, API keys, hostile input ------------------------------------------------------------
def test_never_open_without_an_operator_session(server):
    root = httpx.get(server.url + "/", timeout=10)
    assert root.status_code == 200 and root.headers["content-type"].startswith("text/html")
    assert 'action="/dashboard/login"' in root.text and "default-src 'self'" in root.headers["content-security-policy"]
    assert httpx.get(server.url + "/dashboard/jobs", timeout=10).headers["location"] == "/dashboard/login"
    missing = httpx.get(server.url + "/dashboard/nothing-here", timeout=10)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    key = server.new_key("admin", "viralsync")["key"]
    for headers, cookies in (({}, {}), ({"Authorization": f"Bearer {key}"}, {}), ({"x-api-key": key}, {}),
                             ({}, {"appliance_session": key})):
        r = httpx.get(server.url + "/dashboard/api/jobs", headers=headers, cookies=cookies, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "sign_in_required"
        page = httpx.get(server.url + "/dashboard/users", headers=headers, cookies=cookies, timeout=10)
        assert page.status_code == 303
    wrong = httpx.post(server.url + "/dashboard/login", data={"name": "ops", "password": key}, timeout=10)
    assert wrong.status_code == 401 and "Wrong operator name or password" in wrong.text
    nobody = httpx.post(server.url + "/dashboard/login", data={"name": "admin", "password": PASSWORD}, timeout=10)
    assert nobody.status_code == 401  # an API user is not an operator


def test_session_cookie_csrf_and_hostile_input(server):
    client = httpx.Client(base_url=server.url, timeout=10)
    r = client.post("/dashboard/login", data={"name": "ops", "password": PASSWORD})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/dashboard/jobs").text)[1]
    job_id = server.submit("admin", "test.sleep", {"seconds": 120})
    for headers in ({}, {"X-CSRF-Token": "forged"}):  # every change needs the session's token
        assert client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=headers).status_code == 403
        assert client.post("/dashboard/api/users/admin/keys", json={"dialect": "kodisc"},
                           headers=headers).status_code == 403
        assert client.post("/dashboard/logout", headers=headers).status_code == 403
    assert server.job(job_id)["status"] in ("queued", "running")
    ok = {"X-CSRF-Token": csrf}
    elsewhere = {**ok, "Origin": "https://evil.example"}  # another site's page, even holding the token
    assert client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=elsewhere).status_code == 403
    assert httpx.post(server.url + "/dashboard/login", data={"name": "ops", "password": PASSWORD},
                      headers={"Origin": "https://evil.example"}, timeout=10).status_code == 403
    for path, status in (("/dashboard/api/jobs?cursor=nonsense", 400), ("/dashboard/api/jobs?status=bogus", 400),
                         ("/dashboard/api/jobs?limit=x", 400), ("/dashboard/api/jobs/nope", 404),
                         ("/dashboard/api/jobs/nope/files/video.mp4", 404), ("/dashboard/api/nothing", 404)):
        r = client.get(path)
        assert r.status_code == status and r.json()["message"], path
    for body, status in ((b"[1]", 400), (b"{bad", 400), (b'{"dialect": "msdos"}', 400)):
        r = client.post("/dashboard/api/users/admin/keys", content=body, headers=ok)
        assert r.status_code == status and r.json()["message"]
    assert client.post("/dashboard/api/users/ghost/keys", json={"dialect": "kodisc"}, headers=ok).status_code == 404
    r = client.post("/dashboard/api/users/admin/credits", json={"amount": -5}, headers=ok)
    assert r.status_code == 400
    # the live frame comes from the task's workdir, which untrusted code owns: a link is never followed
    server.wait(job_id, ("running",))
    frame = server.data_dir / "work" / f"{job_id}.t000" / "preview.jpg"
    frame.symlink_to(server.data_dir / "admin.token")
    assert client.get(f"/dashboard/api/jobs/{job_id}/preview.jpg").status_code == 204
    frame.unlink()
    Image.new("RGB", (32, 18), "red").save(frame, "JPEG")
    got = client.get(f"/dashboard/api/jobs/{job_id}/preview.jpg")
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (32, 18)
    # live progress: the job's state now, then its events from the hub
    seen = []
    with client.stream("GET", f"/dashboard/api/live?ids={job_id},nope") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "progress":
                    break
    assert seen[0] == {"job": job_id, "type": "state", "status": "running", "phase": seen[0]["phase"],
                       "progress": seen[0]["progress"]} and 0 < seen[-1]["progress"] < 1
    assert client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=ok).json()["job"]["status"] == "cancelled"
    assert client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=ok).status_code == 409
    # retry makes a new job; delete removes an ended one (409 while active); all through JobService
    again = client.post(f"/dashboard/api/jobs/{job_id}/retry", headers=ok).json()["id"]
    assert again != job_id and server.wait(again, ("running",))["status"] == "running"
    assert client.delete(f"/dashboard/api/jobs/{again}", headers=ok).status_code == 409
    assert client.post(f"/dashboard/api/jobs/{again}/cancel", headers=ok).status_code == 200
    assert client.delete(f"/dashboard/api/jobs/{job_id}", headers=ok).status_code == 200
    assert client.get(f"/dashboard/api/jobs/{job_id}").status_code == 404
    # users, plans and credits
    assert client.post("/dashboard/api/users", json={"name": "newcomer", "plan": "pro"}, headers=ok).status_code == 201
    assert client.post("/dashboard/api/users", json={"name": "newcomer"}, headers=ok).status_code == 400
    assert client.post("/dashboard/api/users/newcomer/plan", json={"plan": "gold"}, headers=ok).status_code == 400
    assert client.post("/dashboard/api/users/newcomer/plan", json={"plan": "free"}, headers=ok).status_code == 200
    got = client.post("/dashboard/api/users/newcomer/credits", json={"amount": 25}, headers=ok).json()
    assert got == {"paid": 25, "free": 0, "total": 25}
    newcomer = next(u for u in client.get("/dashboard/api/users").json()["users"] if u["name"] == "newcomer")
    assert newcomer["plan"] == "free" and newcomer["credits"]["total"] == 25
    assert client.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/dashboard/api/jobs").status_code == 401  # the session is gone server-side


# ---- the browser --------------------------------------------------------------------------------------------
def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def test_in_chromium(server, browser):
    from selenium.webdriver.common.by import By

    d, base = browser, server.url
    hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: the delivery fails and is retried
    auth = {"Authorization": f"Bearer {server.new_key('admin', 'kodisc')['key']}"}
    r = httpx.post(base + "/api/v2/render", headers=auth, timeout=30,
                   json={"code": TINY_SCENE, "className": "Tiny", "quality": "low", "webhookUrl": hook})
    done_id = r.json()["jobId"]
    # sign in at /
    d.get(base + "/")
    d.find_element(By.NAME, "name").send_keys("ops")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{done_id}"]'), what="jobs list")
    # a job's page: progress reaches 100 % live, then its video plays
    d.get(f"{base}/dashboard/jobs/{done_id}")
    wait_for(d, lambda d: text_of(d, "#job-progress .pct") == "100 %", what="progress 100 %")
    wait_for(d, lambda d: text_of(d, ".jobhead .badge") == "completed", what="completed")
    video = wait_for(d, lambda d: d.find_element(By.ID, "preview-video"), what="video element")
    assert video.get_attribute("poster").endswith("/thumb.jpg")
    wait_for(d, lambda d: d.execute_script("return arguments[0].readyState", video) >= 2, 30, "video loads")
    assert d.execute_script("return arguments[0].duration", video) == pytest.approx(1.0, abs=0.15)
    assert d.execute_async_script("const v = arguments[0], done = arguments[1]; v.muted = true;"
                                  "v.play().then(() => setTimeout(() => done(v.currentTime), 400),"
                                  " (e) => done(String(e)))", video) > 0
    assert "manim" in text_of(d, "#tasks") and "done" in text_of(d, "#tasks")
    assert hook in wait_for(d, lambda d: text_of(d, "#deliveries"), 30, "webhook deliveries")
    # a running job: its latest frame shows (shrunk to 320 px wide), then it is cancelled from its page
    hold_id = manim_job(server, HOLDING_SCENE, "Hold", 480, 270)
    d.get(f"{base}/dashboard/jobs/{hold_id}")
    frame = wait_for(d, lambda d: d.find_element(By.ID, "live-frame"), what="live frame element")
    wait_for(d, lambda d: d.execute_script("return arguments[0].naturalWidth", frame) == 320, 120, "live frame")
    assert d.execute_script("return arguments[0].naturalHeight", frame) == 180
    cookie = {"appliance_session": d.get_cookie("appliance_session")["value"]}
    shot = httpx.get(f"{base}/dashboard/api/jobs/{hold_id}/preview.jpg", cookies=cookie, timeout=10)
    red, green, blue = Image.open(io.BytesIO(shot.content)).convert("RGB").getpixel((160, 90))
    assert red > 150 and green < 120 and blue < 120  # the square the animation ended on, not its first frame
    d.find_element(By.ID, "cancel").click()
    wait_for(d, lambda d: text_of(d, ".jobhead .badge") == "cancelled", 30, "cancelled")
    assert server.job(hold_id)["status"] == "cancelled"
    # the jobs list filters and pages
    d.get(f"{base}/dashboard/jobs?status=cancelled&user=admin")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{hold_id}"]'), 30, "filter")
    assert not d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{done_id}"]')
    # a request without the CSRF token is refused, from the signed-in browser itself
    status = d.execute_async_script("const done = arguments[arguments.length - 1];"
                                    "fetch('/dashboard/api/users/admin/keys', {method: 'POST', body: '{}',"
                                    " headers: {'Content-Type': 'application/json'}}).then(r => done(r.status))")
    assert status == 403
    _keys_and_capacity(d, server)
    _device_code(d, server)
    # sign out: the dashboard is closed again
    d.find_element(By.ID, "signout").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "signin"), 30, "signed out")
    d.get(base + "/dashboard/users")
    assert d.current_url.endswith("/dashboard/login") and d.find_elements(By.ID, "signin")


def _keys_and_capacity(d, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d.get(server.url + "/dashboard/users")
    form = wait_for(d, lambda d: d.find_element(By.CSS_SELECTOR, 'form.new-key[data-user="admin"]'), 30, "users")
    Select(form.find_element(By.NAME, "dialect")).select_by_value("kodisc")
    form.find_element(By.NAME, "name").send_keys("from-dashboard")
    form.find_element(By.TAG_NAME, "button").click()
    key = wait_for(d, lambda d: text_of(d, "#new-key"), 30, "key shown once").strip()
    assert re.fullmatch(r"kdsc_live_[0-9a-f]{48}", key)
    me = lambda: httpx.get(server.url + "/api/v2/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)  # noqa: E731
    assert me().status_code == 200
    assert httpx.get(server.url + "/dashboard/api/users", headers={"Authorization": f"Bearer {key}"},
                     timeout=10).status_code == 401  # a key never opens the dashboard
    d.refresh()
    row = wait_for(d, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "tr[data-key]")
                                      if "from-dashboard" in r.text), None), 30, "key row")
    assert key not in d.page_source  # shown once: not after a reload
    row.find_element(By.CSS_SELECTOR, "button.revoke").click()
    wait_for(d, lambda d: any("from-dashboard" in r.text and "revoked" in r.text
                              for r in d.find_elements(By.CSS_SELECTOR, "tr[data-key]")), 30, "revoked")
    assert me().status_code == 401
    d.get(server.url + "/dashboard/capacity")
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#layers tbody tr")) >= 3, 60, "capacity")
    assert "CPU slots" in text_of(d, "#meters") and "NVENC" in text_of(d, "#meters")
    # the quote form: a scene typed in, its class found as `appliance render` finds it; this box has too few
    # finished Manim renders to learn from, and the page says so (test_estimate.py checks the numbers)
    form = d.find_element(By.ID, "quote-form")
    form.find_element(By.NAME, "source").send_keys(TINY_SCENE)
    form.find_element(By.TAG_NAME, "button").click()
    said = wait_for(d, lambda d: text_of(d, "#quote") or None, 30, "quote")
    assert said.startswith("No quote yet: fewer than 3 finished manim jobs"), said


def _device_code(d, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    auth = server.url + "/backend/auth.php?action="
    got = httpx.post(auth + "request_device_code", json={"app_name": "Desk", "app_type": "desktop-app"},
                     timeout=10).json()
    poll = lambda: httpx.get(auth + "poll_device_code&code=" + got["code"], timeout=10).json()  # noqa: E731
    assert poll()["status"] == "pending"
    d.get(got["verification_url"])  # the app's own approval page is served
    assert got["code"] in d.page_source
    d.get(f"{server.url}/dashboard/device?code={got['code']}")
    form = wait_for(d, lambda d: d.find_element(By.ID, "device"), 30, "device page")
    assert got["code"] in text_of(d, "#pending") and "Desk" in text_of(d, "#pending")  # waiting codes are listed
    Select(form.find_element(By.NAME, "user")).select_by_visible_text("admin")
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(d, lambda d: text_of(d, "#device-result").startswith("Approved"), 30, "approved")
    done = poll()
    assert done["status"] == "authorized"
    check = httpx.get(auth + "check", headers={"Authorization": f"Bearer {done['api_token']}"}, timeout=10).json()
    assert check["authenticated"] and check["user"]
