"""API key scopes (read-only < render-only < full-access) are enforced for Kodisc and ViralSync keys: a read-only
key reads, a render-only key also starts and stops renders."""
import httpx
import pytest

from tests.integration.test_kodisc_api import TINY


@pytest.fixture
def scoped(make_server):
    server = make_server()
    server.cli("users", "create", "ada", "--credits", "100")
    return server


def test_a_read_only_kodisc_key_reads_but_cannot_render(scoped):
    read = {"Authorization": f"Bearer {scoped.new_key('ada', 'kodisc', scope='read-only')['key']}"}
    assert httpx.get(f"{scoped.url}/api/v2/me", headers=read).status_code == 200
    refused = httpx.post(f"{scoped.url}/api/v2/render", json=TINY, headers=read)
    assert refused.status_code == 403
    assert refused.json() == {"error": "forbidden", "message": "This API key is read-only: POST requests need a "
                                                               "render-only or full-access key"}
    render = {"Authorization": f"Bearer {scoped.new_key('ada', 'kodisc', scope='render-only')['key']}"}
    assert httpx.post(f"{scoped.url}/api/v2/render", json=TINY, headers=render).status_code == 202
    assert httpx.get(f"{scoped.url}/api/v2/me", headers=read).json()["credits"]["total"] == 90  # one reserve only


def test_a_read_only_viralsync_key_cannot_submit_cancel_or_delete(scoped):
    read = {"x-api-key": scoped.new_key("ada", "viralsync", scope="read-only")["key"]}
    assert httpx.get(f"{scoped.url}/v1/me", headers=read).status_code == 200
    assert httpx.get(f"{scoped.url}/v1/jobs", headers=read).json() == {"jobs": [], "nextCursor": None}
    for method, path in (("POST", "/v1/render/jobs"), ("POST", "/v1/jobs/job_x/cancel"), ("DELETE", "/v1/jobs/job_x")):
        r = httpx.request(method, scoped.url + path, headers=read, json={})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (method, path, r.text)
