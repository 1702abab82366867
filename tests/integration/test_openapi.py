"""The OpenAPI document describes every Kodisc and ViralSync operation (bodies, parameters, security, errors),
real answers match it, and the docs page at /schema loads everything it needs from the appliance itself."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.integration.test_api_errors import MOVIE, TINY, with_keys

KODISC = {("post", "/api/v2/render"), ("get", "/api/v2/render/{job_id}"), ("get", "/api/v2/me")}
VIRALSYNC = {("post", "/v1/render/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/{job_id}"),
             ("get", "/v1/jobs/{job_id}/progress"), ("post", "/v1/jobs/{job_id}/cancel"),
             ("delete", "/v1/jobs/{job_id}"), ("get", "/v1/me"), ("get", "/v1/usage")}


@pytest.fixture(scope="module")
def api(make_module_server):
    """One server for the module: the tests read the document and check answers against it."""
    server = with_keys(make_module_server({"APPLIANCE_PRELOAD": "PIL"}))
    server.doc = httpx.get(f"{server.url}/schema/openapi.json").json()
    return server


def operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        node = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def conforms(doc: dict, schema: dict, value) -> bool:
    """The JSON Schema subset the document uses: $ref, allOf, anyOf, type, enum, required, properties, items."""
    schema = resolve(doc, schema)
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
             "boolean": bool, "null": type(None)}
    if "type" in schema and not isinstance(value, types[schema["type"]]):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if not all(conforms(doc, sub, value) for sub in schema.get("allOf", [])):
        return False
    if "anyOf" in schema and not any(conforms(doc, sub, value) for sub in schema["anyOf"]):
        return False
    if isinstance(value, dict):
        if any(name not in value for name in schema.get("required", [])):
            return False
        props = schema.get("properties", {})
        return all(conforms(doc, props[k], v) for k, v in value.items() if k in props)
    if isinstance(value, list) and "items" in schema:
        return all(conforms(doc, schema["items"], v) for v in value)
    return True


def check_answer(doc: dict, method: str, path: str, response: httpx.Response) -> None:
    documented = operations(doc)[(method, path)]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code)
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    assert conforms(doc, schema, response.json()), (method, path, response.text)


def test_every_operation_is_documented_with_its_security_and_errors(api):
    ops = operations(api.doc)
    assert KODISC | VIRALSYNC <= set(ops)
    assert not [key for key in ops if key[1].startswith("/admin")]
    schemes = api.doc["components"]["securitySchemes"]
    assert schemes["kodiscBearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "kdsc_live_<48 hex>",
                                       "description": "Kodisc: Authorization: Bearer kdsc_live_…"}
    assert (schemes["viralsyncApiKey"]["type"], schemes["viralsyncApiKey"]["in"],
            schemes["viralsyncApiKey"]["name"]) == ("apiKey", "header", "x-api-key")
    assert schemes["viralsyncBearer"]["scheme"] == "bearer"
    for key in KODISC:
        assert ops[key]["security"] == [{"kodiscBearer": []}] and ops[key]["tags"] == ["Kodisc"]
        assert "401" in ops[key]["responses"]
    for key in VIRALSYNC:
        assert {"viralsyncApiKey": []} in ops[key]["security"] and {"viralsyncBearer": []} in ops[key]["security"]
        assert {"401", "429"} <= set(ops[key]["responses"]) and ops[key]["tags"] == ["ViralSync"]
    assert set(ops[("post", "/api/v2/render")]["responses"]) == {"202", "400", "401", "402", "403", "413", "429",
                                                                 "503"}
    assert set(ops[("post", "/v1/render/jobs")]["responses"]) == {"202", "400", "401", "402", "403", "409", "413",
                                                                  "429", "503"}
    assert set(ops[("delete", "/v1/jobs/{job_id}")]["responses"]) == {"204", "401", "403", "404", "409", "429"}
    assert "text/event-stream" in ops[("get", "/v1/jobs/{job_id}/progress")]["responses"]["200"]["content"]


def test_request_bodies_and_parameters_are_the_documented_ones(api):
    doc, ops = api.doc, operations(api.doc)

    def body(key: tuple[str, str]) -> dict:
        return resolve(doc, ops[key]["requestBody"]["content"]["application/json"]["schema"])

    kodisc = body(("post", "/api/v2/render"))
    assert kodisc["required"] == ["code", "className"]
    assert list(kodisc["properties"]) == ["code", "className", "quality", "aspectRatio", "fps", "webhookUrl",
                                          "metadata"]
    assert kodisc["properties"]["quality"]["enum"] == ["low", "medium", "high", "twok", "fourk"]
    assert kodisc["properties"]["aspectRatio"]["enum"] == ["16:9", "9:16"]
    assert kodisc["properties"]["className"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    vs = body(("post", "/v1/render/jobs"))
    assert vs["required"] == ["kind", "projectId", "movie"]
    assert set(vs["properties"]) == {"kind", "projectId", "movie", "renderOptions", "callbackUrl"}
    movie = resolve(doc, vs["properties"]["movie"])
    layers = resolve(doc, movie["properties"]["scenes"]["items"])["properties"]["layers"]["items"]
    assert set(layers["discriminator"]["mapping"]) == {"video", "image", "audio", "text"}
    assert resolve(doc, {"$ref": layers["discriminator"]["mapping"]["text"]})["required"] == ["type", "text", "id"]
    listing = {p["name"]: p for p in ops[("get", "/v1/jobs")]["parameters"]}
    assert set(listing) == {"limit", "cursor", "type", "status"} and listing["limit"]["in"] == "query"
    assert (listing["limit"]["schema"]["minimum"], listing["limit"]["schema"]["maximum"]) == (1, 100)
    sse = {p["name"]: p for p in ops[("get", "/v1/jobs/{job_id}/progress")]["parameters"]}
    assert sse["Last-Event-ID"]["in"] == "header" and sse["job_id"]["in"] == "path"
    kodisc_400 = ops[("post", "/api/v2/render")]["responses"]["400"]["content"]["application/json"]["schema"]
    assert kodisc_400["allOf"][1]["properties"]["error"]["enum"][0] == "JSON body required"
    assert len(kodisc_400["allOf"][1]["properties"]["error"]["enum"]) == 7


def test_every_reference_resolves(api):
    refs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(api.doc)
    assert len(refs) > 20
    for ref in refs:
        assert resolve(api.doc, {"$ref": ref}), ref


def test_real_answers_match_the_documented_schemas(api):
    doc, url = api.doc, api.url

    def check(method: str, path: str, r: httpx.Response) -> None:
        check_answer(doc, method, path, r)

    queued = httpx.post(f"{url}/api/v2/render", json=TINY, headers=api.kodisc)
    check("post", "/api/v2/render", queued)
    check("get", "/api/v2/render/{job_id}", httpx.get(f"{url}/api/v2/render/{queued.json()['jobId']}",
                                                      headers=api.kodisc))
    check("post", "/api/v2/render", httpx.post(f"{url}/api/v2/render", json={"code": ""}, headers=api.kodisc))
    check("get", "/api/v2/me", httpx.get(f"{url}/api/v2/me", headers=api.kodisc))
    check("get", "/api/v2/me", httpx.get(f"{url}/api/v2/me"))
    check("get", "/api/v2/render/{job_id}", httpx.get(f"{url}/api/v2/render/cnothere", headers=api.kodisc))
    job = httpx.post(f"{url}/v1/render/jobs", json=MOVIE, headers=api.vs)
    check("post", "/v1/render/jobs", job)
    check("get", "/v1/jobs/{job_id}", httpx.get(f"{url}/v1/jobs/{job.json()['jobId']}", headers=api.vs))
    check("get", "/v1/jobs", httpx.get(f"{url}/v1/jobs?limit=1", headers=api.vs))
    check("get", "/v1/jobs", httpx.get(f"{url}/v1/jobs?limit=0", headers=api.vs))
    check("post", "/v1/render/jobs", httpx.post(f"{url}/v1/render/jobs", json={"kind": "x"}, headers=api.vs))
    check("get", "/v1/me", httpx.get(f"{url}/v1/me", headers=api.vs))
    check("get", "/v1/usage", httpx.get(f"{url}/v1/usage", headers=api.vs))
    check("get", "/v1/me", httpx.get(f"{url}/v1/me"))
    check("post", "/v1/jobs/{job_id}/cancel", httpx.post(f"{url}/v1/jobs/job_000000000000/cancel", headers=api.vs))


RENDERCAD = {("auth.php", a) for a in ("request_device_code", "poll_device_code", "check", "usage", "plan_info",
                                       "get_api_tokens", "create_api_token", "revoke_api_token", "rename_api_token")} \
    | {("api_discovery.php", a) for a in ("models", "conditions", "backgrounds", "textures", "video_options")} \
    | {("render.php", a) for a in ("create_job", "presign_upload", "finalize_job", "status", "history", "cancel",
                                   "delete", "render")} \
    | {("video.php", a) for a in ("create_job", "finalize_job", "convert", "status", "cancel")} \
    | {("webhooks.php", a) for a in ("register", "list", "delete")}


def test_rendercad_operations_are_documented_and_answers_match(api):
    doc, ops = api.doc, operations(api.doc)
    documented = {(path.split("/")[2].split("?")[0], path.split("action=")[1]) for _, path in ops
                  if path.startswith("/backend/") and "?action=" in path}
    assert documented == RENDERCAD
    schemes = doc["components"]["securitySchemes"]
    assert schemes["rendercadBearer"]["scheme"] == "bearer"
    assert (schemes["rendercadToken"]["in"], schemes["rendercadToken"]["name"]) == ("header", "X-Auth-Token")
    create = ops[("post", "/backend/render.php?action=create_job")]
    assert create["security"] == [{"rendercadBearer": []}, {"rendercadToken": []}] and create["tags"] == ["RenderCAD"]
    assert {"200", "400", "401", "403", "415", "422"} <= set(create["responses"])
    body = resolve(doc, create["requestBody"]["content"]["application/json"]["schema"])
    assert {"source_url", "model", "quality", "references", "custom_instructions"} <= set(body["properties"])
    assert len(body["properties"]["condition"]["enum"]) == 43
    assert ops[("post", "/backend/auth.php?action=request_device_code")]["security"] == []
    assert {} in ops[("get", "/backend/auth.php?action=check")]["security"]
    status = ops[("get", "/backend/render.php?action=status")]
    assert "X-RateLimit-Remaining" in status["responses"]["429"]["headers"]
    assert {p["name"] for p in status["parameters"]} == {"job_id"}
    assert ("put", "/backend/upload/{job_id}/{slot}") in ops and ("get", "/backend/serve_render.php") in ops
    # real answers, with the RenderCAD token as Bearer and as X-Auth-Token
    api.cli("users", "create", "rc", "--credits", "5")
    token = api.new_key("rc", "rendercad")["key"]
    for headers in ({"Authorization": f"Bearer {token}"}, {"X-Auth-Token": token}):
        def call(method: str, path: str, headers: dict = headers, **kwargs) -> None:
            r = httpx.request(method.upper(), api.url + path, headers=headers, timeout=30, **kwargs)
            check_answer(doc, method, path, r)

        call("post", "/backend/render.php?action=create_job", json={"model": "pro", "custom_instructions": "warm"})
        call("post", "/backend/render.php?action=create_job", json={"model": "turbo"})
        call("post", "/backend/render.php?action=create_job", json={"quality": "4k"})
        call("get", "/backend/api_discovery.php?action=conditions")
        call("get", "/backend/auth.php?action=usage")
        call("get", "/backend/webhooks.php?action=list")
        call("post", "/backend/video.php?action=create_job", json={"duration": 5})
    r = httpx.get(api.url + "/backend/render.php?action=status&job_id=render_nope")
    check_answer(doc, "get", "/backend/render.php?action=status", r)
    assert r.status_code == 401


class Assets(HTMLParser):
    """Every URL a page loads by itself: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        url = attrs.get("src") if tag in ("script", "img") else attrs.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_only_from_the_appliance(server, page):
    r = httpx.get(server.url + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    parser = Assets()
    parser.feed(r.text)
    assert len(parser.urls) >= 3, parser.urls  # the Swagger UI script, preset and stylesheet (and an icon)
    for url in parser.urls:
        absolute = urljoin(server.url + page, url)
        assert urlsplit(absolute).netloc == urlsplit(server.url).netloc, url  # no CDN: works air-gapped
        asset = httpx.get(absolute)
        assert asset.status_code == 200 and len(asset.content) > 500, url
    assert "SwaggerUIBundle" in r.text and '"openapi":"3.1.0"' in r.text
