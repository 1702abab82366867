"""The access log: one line per request in the server's log, never a key."""
from __future__ import annotations

import re

import httpx

from tests.conftest import until


def access_lines(server) -> list[str]:
    return [line for line in (server.data_dir / "server.log").read_text().splitlines() if "appliance.access" in line]


def _once_logged(server, path: str) -> str | None:
    """The access lines, once the request to ``path`` has its own (None before)."""
    text = "\n".join(access_lines(server))
    return text if path in text else None


def test_each_request_is_one_line_without_keys(make_server):
    server = make_server({"APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    vs_key = server.new_key("ada", "viralsync")["key"]
    kd_key = server.new_key("ada", "kodisc")["key"]
    assert httpx.get(f"{server.url}/v1/me", headers={"x-api-key": vs_key}).status_code == 200
    assert httpx.get(f"{server.url}/api/v2/me", headers={"Authorization": f"Bearer {kd_key}"}).status_code == 200
    httpx.get(f"{server.url}/v1/jobs", params={"api_key": vs_key, "limit": "2"}, headers={"x-api-key": vs_key})
    assert httpx.get(f"{server.url}/no/such/path?token=abc123secret").status_code == 404
    # a line is written as its response ends: the last request's line means every earlier one is there
    text = until(lambda: _once_logged(server, "/no/such/path"), "the last request's access line")
    assert re.search(r'127\.0\.0\.1 "GET /v1/me" 200 \d+\.\dms$', text, re.M), text
    assert re.search(r'"GET /api/v2/me" 200 ', text), text
    assert re.search(r'"GET /v1/jobs\?api_key=\*\*\*&limit=2" 200 ', text), text
    assert re.search(r'"GET /no/such/path\?token=\*\*\*" 404 ', text), text
    assert re.search(r'"GET /healthz" 200 ', text), text  # the fixture's own readiness probe
    log = (server.data_dir / "server.log").read_text()
    for secret in (vs_key, kd_key, "abc123secret", "Bearer"):
        assert secret not in log


def test_the_access_log_can_be_turned_off(make_server):
    server = make_server({"APPLIANCE_PRELOAD": "PIL", "APPLIANCE_ACCESS_LOG": "false"})
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert access_lines(server) == []  # not even the fixture's readiness probe, whose response ended long ago
