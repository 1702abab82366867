"""RenderCAD rate limits against a real server: the seed's table per token, the X-RateLimit-* headers on every
limited endpoint (none on unlimited ones), the 429 with Retry-After, and a restart that does not reset them."""
from __future__ import annotations

import time

import httpx
import pytest

B = "/backend"


@pytest.fixture
def rc(make_server):
    server = make_server()
    server.cli("users", "create", "ada", "--credits", "5")
    server.key = server.new_key("ada", "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def get(server, path: str, action: str, auth: dict | None = None, **params) -> httpx.Response:
    return httpx.get(f"{server.url}{B}/{path}", params={"action": action, **params},
                     headers=server.auth if auth is None else auth, timeout=10)


def test_discovery_limit_headers_429_and_restart(rc):
    first = get(rc, "api_discovery.php", "models")
    assert first.status_code == 200
    h = first.headers
    assert h["x-ratelimit-endpoint"] == "discovery" and h["x-ratelimit-limit"] == "60"
    assert h["x-ratelimit-remaining"] == "59" and 3590 < int(h["x-ratelimit-reset"]) - time.time() <= 3601
    for n in range(59):  # discovery endpoints share one count
        r = get(rc, "api_discovery.php", ("conditions", "backgrounds", "textures", "video_options")[n % 4])
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == str(58 - n)
    over = get(rc, "api_discovery.php", "models")
    assert over.status_code == 429 and "Rate limit exceeded" in over.json()["error"]
    assert over.headers["x-ratelimit-remaining"] == "0" and over.headers["x-ratelimit-limit"] == "60"
    assert 3590 < int(over.headers["retry-after"]) <= 3600
    # per token: another token of the same user has its own allowance
    other = {"Authorization": f"Bearer {rc.new_key('ada', 'rendercad')['key']}"}
    assert get(rc, "api_discovery.php", "models", auth=other).status_code == 200
    # unlimited endpoints carry no rate-limit headers
    usage = get(rc, "auth.php", "usage")
    assert usage.status_code == 200 and "x-ratelimit-limit" not in usage.headers
    rc.stop()
    rc.start()
    again = get(rc, "api_discovery.php", "models")
    assert again.status_code == 429 and int(again.headers["retry-after"]) > 3500


def test_status_polling_is_120_a_minute_and_errors_carry_headers(rc):
    for n in range(120):
        r = get(rc, "render.php", "status", job_id="render_nope")
        assert r.status_code == 404 and r.headers["x-ratelimit-remaining"] == str(119 - n)
        assert r.headers["x-ratelimit-endpoint"] == "status"
    over = get(rc, "render.php", "status", job_id="render_nope")
    assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 60
    assert get(rc, "render.php", "history").status_code == 200  # history has no request-rate limit


def test_webhook_and_token_writes(rc):
    def post(path: str, action: str, body: dict) -> httpx.Response:
        return httpx.post(f"{rc.url}{B}/{path}?action={action}", json=body, headers=rc.auth, timeout=10)

    ids = []
    for n in range(10):  # register and delete share 10 an hour
        if n % 2 == 0:
            r = post("webhooks.php", "register", {"url": f"https://h{n}.example.com", "events": ["render.failed"]})
            ids.append(r.json()["id"])
        else:
            r = post("webhooks.php", "delete", {"id": ids.pop()})
        assert r.status_code == 200 and r.headers["x-ratelimit-endpoint"] == "webhook_write"
    r = post("webhooks.php", "register", {"url": "https://z.example.com", "events": ["render.failed"]})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert get(rc, "webhooks.php", "list").headers["x-ratelimit-limit"] == "60"
    tokens = get(rc, "auth.php", "get_api_tokens")
    assert tokens.headers["x-ratelimit-limit"] == "120" and tokens.headers["x-ratelimit-endpoint"] == "api_token_list"
    r = post("auth.php", "rename_api_token", {"token_id": tokens.json()["tokens"][0]["id"], "new_name": "x"})
    assert r.headers["x-ratelimit-limit"] == "10"


def test_device_code_request_per_address(rc):
    for n in range(10):
        r = httpx.post(f"{rc.url}{B}/auth.php?action=request_device_code", timeout=10)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == str(9 - n)
    r = httpx.post(f"{rc.url}{B}/auth.php?action=request_device_code", timeout=10)
    assert r.status_code == 429 and r.headers["x-ratelimit-endpoint"] == "device_code_request"


def test_device_page_approval_is_5_an_hour_per_address(rc):
    for _ in range(5):
        r = httpx.post(f"{rc.url}/auth_device.html", data={"code": "NOPE-0000", "token": "rendercad_bad"}, timeout=10)
        assert r.status_code == 401
    r = httpx.post(f"{rc.url}/auth_device.html", data={"code": "NOPE-0000", "token": rc.key}, timeout=10)
    assert r.status_code == 429 and "Too many attempts" in r.text
