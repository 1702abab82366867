"""RenderCAD auth.php against a real server: check, usage, plan, tokens with scopes, device-code sign-in."""
from __future__ import annotations

import re

import httpx
import pytest

B = "/backend/auth.php"


@pytest.fixture(scope="module")
def rc_box(make_module_server):
    return make_module_server({"APPLIANCE_PRELOAD": "PIL"})  # nothing renders here


@pytest.fixture
def rc(rc_box):
    """The module's server with a user of this test's own (its own tokens, usage and limits)."""
    server = rc_box
    server.key = server.new_key(server.fresh_user(50), "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def call(server, action: str, method: str = "GET", headers: dict | None = None, **kw) -> httpx.Response:
    return httpx.request(method, f"{server.url}{B}?action={action}", headers=headers or {}, timeout=10, **kw)


def test_check_without_with_and_with_a_bad_token(rc):
    r = call(rc, "check")
    assert r.status_code == 200 and r.json() == {"success": False, "authenticated": False, "token_valid": False}
    r = call(rc, "check", headers={"Authorization": "Bearer rendercad_" + "x" * 32})
    assert r.status_code == 401 and r.json()["authenticated"] is False and r.json()["error"]
    r = call(rc, "check", headers={"X-Auth-Token": rc.key})
    body = r.json()
    assert r.status_code == 200 and body["authenticated"] and body["token_valid"]
    assert body["token_costs"] == {"classic": 1, "pro": 2, "4k_upgrade": 2}
    assert body["user"]["pooled_tokens_remaining"] == 50 and body["user"]["monthly_renders_used"] == 0


def test_usage_and_plan_info(rc):
    usage = call(rc, "usage", headers=rc.auth).json()
    assert usage["success"] and usage["monthly_remaining"] == 50 and usage["pending_renders"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-01", usage["billing_cycle_start"])
    plan = call(rc, "plan_info", headers=rc.auth).json()
    assert plan["plan_code"] == "studio" and plan["subscription_status"] == "active" and plan["credits_remaining"] == 50


def test_token_lifecycle_and_the_limit_of_ten(rc):
    r = call(rc, "create_api_token", "POST", rc.auth, json={"token_name": "My App", "scope": "read-only"})
    created = r.json()
    assert r.status_code == 200 and re.fullmatch(r"rendercad_[A-Za-z0-9]{32}", created["token"])
    assert created["warning"] == "Save this token now. You will not be able to see it again."
    assert created["token_data"]["scope"] == "read-only" and created["token_data"]["usage_count"] == 0
    listed = call(rc, "get_api_tokens", headers=rc.auth).json()
    assert listed["max_tokens"] == 10 and len(listed["tokens"]) == 2
    assert all("token" not in t for t in listed["tokens"])  # plaintext is shown once only
    tid = created["token_data"]["id"]
    assert call(rc, "rename_api_token", "POST", rc.auth, json={"token_id": tid, "new_name": "CLI"}).json()["success"]
    names = {t["id"]: t["token_name"] for t in call(rc, "get_api_tokens", headers=rc.auth).json()["tokens"]}
    assert names[tid] == "CLI"
    assert call(rc, "revoke_api_token", "POST", rc.auth, json={"token_id": tid}).status_code == 200
    assert call(rc, "check", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401
    for n in range(9):
        assert call(rc, "create_api_token", "POST", rc.auth, json={"token_name": f"t{n}"}).status_code == 200
    r = call(rc, "create_api_token", "POST", rc.auth, json={"token_name": "eleventh"})
    assert r.status_code == 400 and "10" in r.json()["error"]


def test_scopes_are_enforced(rc):
    ro = call(rc, "create_api_token", "POST", rc.auth, json={"token_name": "ro", "scope": "read-only"}).json()
    ro_auth = {"Authorization": f"Bearer {ro['token']}"}
    assert call(rc, "get_api_tokens", headers=ro_auth).status_code == 200
    assert call(rc, "usage", headers=ro_auth).status_code == 200
    r = call(rc, "create_api_token", "POST", ro_auth, json={"token_name": "x"})
    assert r.status_code == 403 and "full-access" in r.json()["error"]
    render_only = call(rc, "create_api_token", "POST", rc.auth, json={"token_name": "r", "scope": "render-only"})
    r = call(rc, "revoke_api_token", "POST", {"X-Auth-Token": render_only.json()["token"]}, json={"token_id": 1})
    assert r.status_code == 403


def test_protocol_errors(rc):
    assert call(rc, "usage").status_code == 401
    r = call(rc, "nope", headers=rc.auth)
    assert r.status_code == 404 and r.json() == {"error": "Unknown action"}
    r = call(rc, "usage", "POST", rc.auth, json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET" and r.json()["error"]
    r = call(rc, "create_api_token", "POST", {**rc.auth, "Content-Type": "application/x-www-form-urlencoded"},
             content=b"token_name=x")
    assert r.status_code == 415 and r.json() == {"error": "Content-Type must be application/json"}
    r = call(rc, "create_api_token", "POST", {**rc.auth, "Content-Type": "application/json"}, content=b"{bad")
    assert r.status_code == 400 and r.json()["error"]
    r = call(rc, "create_api_token", "POST", rc.auth, json={"token_name": "x", "scope": "god"})
    assert r.status_code == 400
    r = httpx.delete(f"{rc.url}{B}?action=check", timeout=10)
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(f"{rc.url}/backend/nothing.php", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def _request_code(rc, **kw) -> dict:
    r = call(rc, "request_device_code", "POST", **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_device_code_flow_with_the_page(rc):
    meta = {"app_name": "RENDERCAD Browser Extension", "app_type": "browser-extension", "app_version": "1.0.0"}
    got = _request_code(rc, json=meta)
    assert re.fullmatch(r"[A-Z2-9]{6}", got["code"]) and got["expires_in"] == 600 and got["poll_interval"] == 3
    assert got["verification_url"] == (f"{rc.url}/auth_device.html?code={got['code']}&app_name=RENDERCAD%20Browser"
                                       "%20Extension&app_type=browser-extension&app_version=1.0.0")
    poll = lambda code: call(rc, f"poll_device_code&code={code}")  # noqa: E731
    assert poll(got["code"]).json() == {"status": "pending", "message": "Waiting for user authorization"}
    page = httpx.get(got["verification_url"], timeout=10)
    assert page.status_code == 200 and got["code"] in page.text and "RENDERCAD Browser Extension" in page.text
    assert 'href="/dashboard/device"' in page.text  # an operator approves from the dashboard (test_dashboard)
    bad = httpx.post(f"{rc.url}/auth_device.html", data={"code": got["code"], "token": "rendercad_nope"}, timeout=10)
    assert bad.status_code == 401 and poll(got["code"]).json()["status"] == "pending"
    good = httpx.post(f"{rc.url}/auth_device.html", data={"code": got["code"], "token": rc.key}, timeout=10)
    assert good.status_code == 200 and "Authorized" in good.text
    done = poll(got["code"]).json()
    assert done["status"] == "authorized" and done["message"] == "Authorization successful"
    assert call(rc, "check", headers={"Authorization": f"Bearer {done['api_token']}"}).json()["authenticated"]
    names = [t["token_name"] for t in call(rc, "get_api_tokens", headers=rc.auth).json()["tokens"]]
    assert any(n.startswith("RENDERCAD Browser Extension v1.0.0 - ") for n in names)
    assert poll(got["code"]).json() == {"status": "expired", "message": "Code has expired"}  # the token went once


def test_device_code_query_form_and_cli(rc):
    r = httpx.post(f"{rc.url}{B}?action=request_device_code&app_name=CLI&app_type=cli-tool&app_version=2.0",
                   timeout=10)
    assert r.status_code == 200 and "app_name=CLI" in r.json()["verification_url"]
    got = _request_code(rc, files={"app_name": (None, "Desk"), "app_type": (None, "desktop-app")})
    assert "app_name=Desk" in got["verification_url"]
    rc.cli("device", "approve", got["code"].lower(), "--user", rc.user)
    assert call(rc, f"poll_device_code&code={got['code']}").json()["status"] == "authorized"
    r = call(rc, "poll_device_code")
    assert r.status_code == 400 and r.json() == {"error": "Code parameter required"}
    assert call(rc, "poll_device_code&code=ZZZZZZ").status_code == 404
