"""api_discovery.php and the seed's quick start (bash + curl + jq, verbatim but for host and token)."""
from __future__ import annotations

import io
import os
import subprocess

import httpx
import pytest
from PIL import Image

from tests.integration.test_rendercad_render import photo

D = "/backend/api_discovery.php"
# The seed's quick start, verbatim; only https://rendercad.ai is replaced by the appliance's address.
QUICKSTART = r'''
JOB=$(curl -s -X POST "https://rendercad.ai/backend/render.php?action=create_job" \
-H "Authorization: Bearer $TOKEN" \
-H "Content-Type: application/json" \
-d '{"model":"pro","quality":"standard","render_mode":"preserve","background_style":"auto","condition":"auto"}')
JOB_ID=$(echo "$JOB" | jq -r '.job_id')
UPLOAD=$(curl -s -X POST "https://rendercad.ai/backend/render.php?action=presign_upload" \
-H "Authorization: Bearer $TOKEN" \
-H "Content-Type: application/json" \
-d "{\"job_id\":\"$JOB_ID\",\"slot\":\"input_main\",\"content_type\":\"image/jpeg\"}")
curl -s -X PUT "$(echo "$UPLOAD" | jq -r '.presigned_url')" \
-H "Content-Type: image/jpeg" \
--data-binary "@photo.jpg" > /dev/null
RENDER=$(curl -s -X POST "https://rendercad.ai/backend/render.php?action=finalize_job" \
-H "Authorization: Bearer $TOKEN" \
-H "Content-Type: application/json" \
-d "{\"job_id\":\"$JOB_ID\"}")
while true; do
STATUS=$(curl -s "https://rendercad.ai/backend/render.php?action=status&job_id=$JOB_ID" \
-H "Authorization: Bearer $TOKEN")
STATE=$(echo "$STATUS" | jq -r '.status')
[ "$STATE" != "pending" ] && [ "$STATE" != "processing" ] && break
sleep 2
done
echo "$STATUS" | jq '{status,output_url,asset_url,error_message}'
'''


@pytest.fixture
def rc(make_server, tmp_path):
    server = make_server({"APPLIANCE_ASSETS_DIR": str(tmp_path / "assets")})
    server.cli("users", "create", "ada", "--credits", "10")
    server.key = server.new_key("ada", "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def get(server, action: str) -> dict:
    r = httpx.get(f"{server.url}{D}?action={action}", headers=server.auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_quickstart_verbatim(rc, tmp_path):
    import json

    (tmp_path / "photo.jpg").write_bytes(photo())
    script = QUICKSTART.replace("https://rendercad.ai", rc.url)
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TOKEN": rc.key})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed" and result["error_message"] is None, result
    img = httpx.get(result["output_url"], headers=rc.auth, timeout=10)
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size == (1024, 1024)
    assert Image.open(io.BytesIO(httpx.get(result["asset_url"], timeout=10).content)).size == (1024, 1024)


def test_models_conditions_and_video_options(rc):
    models = get(rc, "models")
    assert [m["id"] for m in models["models"]] == ["classic", "pro"]
    assert models["quality_tiers"][1] == {"id": "4k", "name": "4K", "resolution": "4096x4096",
                                          "additional_cost": 2, "requires_model": "pro"}
    conditions = get(rc, "conditions")
    assert conditions["total_count"] == 43 == len(conditions["conditions"])
    assert conditions["conditions"][0] == {"value": "auto", "label": "Auto (no condition)", "category": None}
    assert conditions["categories"] == ["Clean", "Surface", "Damage", "Age", "Wear", "Structural",
                                        "Moisture & Temperature", "Extreme States", "Environmental Coverage"]
    assert {"value": "snow-covered", "label": "Snow-Covered", "category": "Environmental Coverage"} in \
        conditions["conditions"]
    assert {c["category"] for c in conditions["conditions"][1:]} == set(conditions["categories"])
    video = get(rc, "video_options")["video_options"]
    assert video["defaults"]["duration"] == 8 and {d["value"] for d in video["durations"]} == {4, 6, 8}


def test_asset_library_defaults_and_operator_drops(rc, tmp_path):
    backgrounds = get(rc, "backgrounds")
    assert backgrounds["total_count"] >= 10 and len({b["id"] for b in backgrounds["backgrounds"]}) == 10
    first = backgrounds["backgrounds"][0]
    assert len(first["id"]) == 24 and first["name"] and first["category"]
    thumb = httpx.get(first["thumb_url"], timeout=10)
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    assert get(rc, "textures")["total_count"] >= 10
    drop = tmp_path / "assets" / "backgrounds" / "exterior"
    drop.mkdir(parents=True)
    Image.new("RGB", (640, 480), (10, 120, 200)).save(drop / "modern-house-with-pool.jpg")
    listed = get(rc, "backgrounds")
    assert listed["total_count"] == backgrounds["total_count"] + 1  # no restart
    mine = next(b for b in listed["backgrounds"] if b["name"] == "Modern House With Pool")
    assert mine["category"] == "exterior"
    assert Image.open(io.BytesIO(httpx.get(mine["thumb_url"], timeout=10).content)).size == (256, 192)


def test_discovery_needs_a_token(rc):
    r = httpx.get(f"{rc.url}{D}?action=models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]
    r = httpx.get(f"{rc.url}{D}?action=prices", headers=rc.auth, timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "Unknown action"}
