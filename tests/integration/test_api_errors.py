"""Every answer under /api/v2 and /v1 keeps its dialect's error shape, and hostile requests get an exact 4xx,
never a 500: Litestar's own 404/405/413, bodies nested too deep, bad webhook URLs (also as a key's default),
bad Last-Event-ID and list parameters, bodies over the caps (answered before they are read), admin bodies."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.exceptions import HTTPException

from appliance.api import kodisc, viralsync
from appliance.api.common import handlers_for
from tests.conftest import ROOT

KODISC_404 = {"error": "not_found", "message": "No such endpoint"}
KODISC_405 = {"error": "method_not_allowed", "message": "Method not allowed on this endpoint"}
KODISC_413 = {"error": "Request body too large", "message": "Maximum request body is 200 KB"}
VS_404 = {"error": "No such endpoint", "code": "NOT_FOUND"}
VS_405 = {"error": "Method not allowed on this endpoint", "code": "METHOD_NOT_ALLOWED"}
VS_413 = {"error": "Request body larger than 10 MB", "code": "PAYLOAD_TOO_LARGE"}
TINY = {"code": "from manim import *\nclass A(Scene):\n    pass\n", "className": "A", "quality": "low"}
MOVIE = {"kind": "movie", "projectId": "p", "movie": {"width": 640, "height": 360, "fps": 15, "scenes": [
    {"id": "s0", "duration": 0.5, "layers": [{"id": "t", "type": "text", "text": "hi", "duration": 0.5}]}]}}
LOOPBACK_REFUSED = ("URL host {host} is a loopback, link-local or reserved address (allowed only with "
                    "APPLIANCE_ALLOW_LOOPBACK_TARGETS=true)")


def bad_urls(port: int) -> list[tuple[str, str]]:
    """(URL, the URL policy's reason): malformed, control character, space, two loopback spellings."""
    return [("https://[x", "URL is malformed (Invalid IPv6 URL)"),
            ("https://hooks.example/\u0001", "URL must not contain spaces or control characters"),
            ("https://hooks.example/a b", "URL must not contain spaces or control characters"),
            (f"http://[::ffff:127.0.0.1]:{port}/", LOOPBACK_REFUSED.format(host="::ffff:127.0.0.1")),
            ("http://2130706433/", LOOPBACK_REFUSED.format(host="2130706433"))]


def with_keys(server):
    server.cli("users", "create", "ada", "--credits", "100")
    server.kodisc = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    server.vs = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    return server


@pytest.fixture(scope="module")
def api(make_module_server):
    return with_keys(make_module_server({"APPLIANCE_PRELOAD": "PIL"}))


@pytest.fixture(scope="module")
def strict(make_module_server):
    """Loopback webhook targets refused, as in production."""
    return with_keys(make_module_server({"APPLIANCE_PRELOAD": "PIL", "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "false"}))


def raw(server, head: str, body: bytes, timeout: float = 20) -> tuple[int, dict, bytes]:
    """Send a request head and part of a body over a plain socket; read the answer without sending the rest."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536) or b""
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(rest) < int(headers.get("content-length", 0)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(lines[0].split()[1]), headers, rest


# ---- Litestar's own answers -------------------------------------------------------------------------
def test_unknown_paths_and_wrong_methods_answer_in_each_dialects_shape(api):
    cases = [("GET", "/api/v2/nope", 404, KODISC_404), ("GET", "/api/v2/render/c1/extra", 404, KODISC_404),
             ("POST", "/api/v2", 404, KODISC_404), ("DELETE", "/api/v2/me", 405, KODISC_405),
             ("GET", "/api/v2/render", 405, KODISC_405), ("PUT", "/api/v2/render/c1", 405, KODISC_405),
             ("GET", "/v1/nope", 404, VS_404), ("GET", "/v1/jobs/j/progress/x", 404, VS_404),
             ("PUT", "/v1/me", 405, VS_405), ("POST", "/v1/jobs", 405, VS_405),
             ("GET", "/v1/render/jobs", 405, VS_405), ("PATCH", "/v1/jobs/job_1", 405, VS_405)]
    for method, path, status, body in cases:
        headers = api.kodisc if path.startswith("/api") else api.vs
        r = httpx.request(method, api.url + path, headers=headers, timeout=10)
        assert (r.status_code, r.json()) == (status, body), (method, path, r.text)
        assert r.headers["content-type"].startswith("application/json")
        if status == 405:
            assert r.headers.get("allow"), (method, path)


@pytest.mark.parametrize("dialect", [kodisc, viralsync])
def test_415_and_unexpected_exceptions_map_onto_the_dialects_shape(dialect, caplog):
    """Litestar raises no 415 for these raw-body handlers and a 500 is a bug, so neither can be provoked over
    HTTP: call the routers' handlers directly."""
    handlers = handlers_for(dialect.error_response)
    r415 = handlers[HTTPException](None, HTTPException(status_code=415))
    r500 = handlers[500](SimpleNamespace(method="GET", url=SimpleNamespace(path="/x")), RuntimeError("boom"))
    if dialect is kodisc:
        assert r415.content == {"error": "unsupported_media_type", "message": "Unsupported media type"}
        assert r500.content == {"error": "internal_error",
                                "message": "The appliance hit an internal error; see the server log"}
    else:
        assert r415.content == {"error": "Unsupported media type", "code": "UNSUPPORTED_MEDIA_TYPE"}
        assert r500.content == {"error": "The appliance hit an internal error; see the server log",
                                "code": "INTERNAL_ERROR"}
    assert (r415.status_code, r500.status_code) == (415, 500)
    assert "boom" in caplog.text  # logged with its traceback, not shown to the client


# ---- bodies -----------------------------------------------------------------------------------------
def test_a_thousand_brackets_are_a_400_in_both_dialects(api):
    body = b"[" * 1000  # deeper than json's recursion limit: RecursionError, caught by both parsers
    r = httpx.post(f"{api.url}/api/v2/render", content=body, headers=api.kodisc)
    assert (r.status_code, r.json()) == (400, {"error": "JSON body required"})
    r = httpx.post(f"{api.url}/v1/render/jobs", content=body, headers=api.vs)
    assert (r.status_code, r.json()) == (400, {"error": "Request body must be a JSON object",
                                               "code": "INVALID_MOVIE_JSON"})


def test_kodisc_answers_413_before_reading_a_5_mb_body(api):
    """Only 64 KB of the announced 5 MB are ever sent: the answer comes from the Content-Length alone."""
    head = (f"POST /api/v2/render HTTP/1.1\nHost: x\nAuthorization: {api.kodisc['Authorization']}\n"
            f"Content-Type: application/json\nContent-Length: {5 * 2**20}\n")
    status, _, body = raw(api, head, b'{"code": "' + b"#" * 65536)
    assert (status, json.loads(body)) == (413, KODISC_413)


def test_kodisc_answers_413_to_a_chunked_body_once_it_passes_200_kb(api):
    """No Content-Length: the stream is cut at the cap; the rest (and the final chunk) is never sent."""
    head = (f"POST /api/v2/render HTTP/1.1\nHost: x\nAuthorization: {api.kodisc['Authorization']}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked\n")
    chunk = b"#" * 65536
    status, _, body = raw(api, head, b"".join(b"10000\r\n" + chunk + b"\r\n" for _ in range(4)))
    assert (status, json.loads(body)) == (413, KODISC_413)


def test_a_valid_movie_with_a_50_mb_extra_field_is_413_before_it_is_read(api):
    start = json.dumps({**MOVIE, "padding": ""})[:-2].encode()  # ... "padding": "   (left open)
    head = (f"POST /v1/render/jobs HTTP/1.1\nHost: x\nx-api-key: {api.vs['x-api-key']}\n"
            f"Content-Type: application/json\nContent-Length: {50 * 2**20}\n")
    status, _, body = raw(api, head, start + b"x" * 65536)
    assert (status, json.loads(body)) == (413, VS_413)


def test_kodisc_fps_above_120_and_a_classname_with_a_newline_are_documented_400s(api):
    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{api.url}/api/v2/render", json=body, headers=api.kodisc)

    r = post({**TINY, "fps": 121})
    assert (r.status_code, r.json()) == (400, {"error": "fps must be a positive integer",
                                               "message": "fps must be at most 120"})
    r = post({**TINY, "className": "A\n"})
    assert (r.status_code, r.json()) == (400, {"error": "className must be a valid Python identifier"})


def test_objects_and_arrays_where_names_are_expected_are_400s(api):
    """Found by `make fuzz`: `{} in QUALITIES` hashes the value (TypeError, a 500) instead of refusing it."""
    for field, message in (("quality", "quality must be one of: low, medium, high, twok, fourk"),
                           ("aspectRatio", "aspectRatio must be one of: 16:9, 9:16")):
        for value in ({}, [], {"a": 1}):
            r = httpx.post(f"{api.url}/api/v2/render", json={**TINY, field: value}, headers=api.kodisc)
            assert (r.status_code, r.json()) == (400, {"error": message}), (field, value)
    for value in ({}, [], 1):
        r = httpx.post(f"{api.url}/v1/render/jobs", json={**MOVIE, "renderOptions": {"qualityPreset": value}},
                       headers=api.vs)
        assert (r.status_code, r.json()) == (400, {
            "error": "renderOptions.qualityPreset must be one of: stable, balanced, fast, turbo",
            "code": "INVALID_MOVIE_JSON"}), value
    huge = {**MOVIE, "movie": {**MOVIE["movie"], "scenes": [{"id": "a", "duration": 1e308},
                                                            {"id": "b", "duration": 1e308}]}}
    r = httpx.post(f"{api.url}/v1/render/jobs", json=huge, headers=api.vs)  # found by `make fuzz`: int overflow
    assert (r.status_code, r.json()) == (400, {
        "error": "Total duration inf min exceeds the studio plan's per-job limit of 120 min",
        "code": "PLAN_DURATION_EXCEEDED"})
    r = httpx.post(f"{api.url}/api/v2/render", json={**TINY, "fps": 30.0}, headers=api.kodisc)
    assert r.status_code == 202, r.text  # 30.0 is the JSON integer 30


# ---- URLs -------------------------------------------------------------------------------------------
def test_bad_webhook_and_callback_urls_are_400_in_each_dialects_shape(strict):
    for url, reason in bad_urls(strict.port):
        r = httpx.post(f"{strict.url}/api/v2/render", json={**TINY, "webhookUrl": url}, headers=strict.kodisc)
        assert (r.status_code, r.json()) == (400, {"error": "webhookUrl must be an https:// URL",
                                                   "message": reason}), url
        r = httpx.post(f"{strict.url}/v1/render/jobs", json={**MOVIE, "callbackUrl": url}, headers=strict.vs)
        assert (r.status_code, r.json()) == (400, {"error": f"callbackUrl: {reason}",
                                                   "code": "INVALID_MOVIE_JSON"}), url
    assert "ada" not in strict.cli("jobs", "list")  # nothing was queued


def test_a_bad_default_webhook_url_is_refused_by_keys_create(strict):
    before = strict.cli("keys", "list")
    for dialect in ("kodisc", "viralsync"):
        for url, reason in bad_urls(strict.port):
            proc = subprocess.run([sys.executable, "-m", "appliance.cli", "keys", "create", "--user", "ada",
                                   "--dialect", dialect, "--webhook-url", url, "--data-dir", str(strict.data_dir)],
                                  capture_output=True, text=True, cwd=ROOT, env=strict.env)
            assert proc.returncode == 2 and proc.stdout == "", (url, proc.stdout)
            assert proc.stderr == f"appliance: --webhook-url refused: {reason}\n", url
    assert strict.cli("keys", "list") == before  # no key was created
    key = strict.new_key("ada", "kodisc", webhook_url="https://hooks.example/kodisc")
    assert key["key"].startswith("kdsc_live_")


# ---- parameters -------------------------------------------------------------------------------------
def test_a_bad_last_event_id_replays_the_stream_from_the_start(api):
    job_id = httpx.post(f"{api.url}/v1/render/jobs", json=MOVIE, headers=api.vs).json()["jobId"]
    httpx.post(f"{api.url}/v1/jobs/{job_id}/cancel", headers=api.vs)  # or it just finished: 409, also final

    def frames(extra: dict) -> list[str]:
        with httpx.stream("GET", f"{api.url}/v1/jobs/{job_id}/progress", headers={**api.vs, **extra},
                          timeout=60) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            return [line for line in r.iter_lines() if line.startswith(("id:", "event:"))]

    expected = frames({})  # no Last-Event-ID: from the start
    assert expected[0].startswith("id: ") and expected[-1] in ("event: cancelled", "event: done"), expected
    for value in ("abc", "1e3", "-5", "1" * 40, b"\xb2", ""):  # b"\xb2" is "²": isdigit() but not int()
        assert frames({"Last-Event-ID": value}) == expected, value


def test_bad_list_parameters_are_400_invalid_request(api):
    page = "limit must be 1-100 and cursor must come from nextCursor"
    cases = {"cursor=eHl6": page, "cursor=!!!": page, "limit=abc": page,
             "limit=0": "limit must be between 1 and 100", "limit=101": "limit must be between 1 and 100",
             "status=finished": "status must be one of: queued, running, waiting, done, failed, cancelled"}
    for query, message in cases.items():
        r = httpx.get(f"{api.url}/v1/jobs?{query}", headers=api.vs)
        assert (r.status_code, r.json()) == (400, {"error": message, "code": "INVALID_REQUEST"}), query
    r = httpx.get(f"{api.url}/v1/jobs?limit=100&type=agent", headers=api.vs)
    assert (r.status_code, r.json()) == (200, {"jobs": [], "nextCursor": None})


# ---- the admin API ----------------------------------------------------------------------------------
def test_admin_bodies_that_are_not_objects_or_too_deep_are_400_json(api):
    not_object = {"error": "bad_request", "message": "body must be a JSON object"}
    cases = [(b"[" * 1000, not_object), (b"{" * 100_000, not_object), (b"[1, 2]", not_object),
             (b'"x"', not_object), (b"\xff\xfe", not_object),
             (b'{"user": "ada", "renderer": "x", "priority": "high"}',
              {"error": "bad_request", "message": "priority must be an integer from -1000 to 1000"}),
             (b'{"user": "ada", "renderer": "x", "priority": 100000000000000000000}',
              {"error": "bad_request", "message": "priority must be an integer from -1000 to 1000"})]
    for body, expected in cases:
        r = httpx.post(f"{api.url}/admin/jobs", content=body, headers=api.admin_headers(), timeout=10)
        assert (r.status_code, r.json()) == (400, expected), body[:40]
    r = httpx.get(f"{api.url}/admin/jobs/nojob/events?after=%C2%B2", headers=api.admin_headers())
    assert r.status_code in (200, 404) and r.headers["content-type"].startswith("application/json")
