"""Per-user disk accounting for the operator (issue #17 item 3): what each user's completed jobs keep on disk,
recorded when the outputs are published, shown by `appliance users list` (DISK) and the dashboard's users API;
a deleted job no longer counts, and another user's jobs never count for them."""
from __future__ import annotations

import httpx
import pytest

from appliance.store import jobs
from appliance.store.db import open_db
from tests.integration.test_viralsync_api import small_movie

pytestmark = pytest.mark.slow


def test_a_users_outputs_are_counted_and_a_deleted_job_stops_counting(make_server):
    server = make_server({"APPLIANCE_PRELOAD": "PIL,numpy"})
    for name in ("ada", "bob"):
        server.cli("users", "create", name)
    h = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    job_id = httpx.post(f"{server.url}/v1/render/jobs", json=small_movie(1, 1.0), headers=h, timeout=30).json()["jobId"]
    assert server.wait(job_id)["status"] == "completed"
    size = sum(p.stat().st_size for p in (server.data_dir / "outputs" / job_id).iterdir())
    assert size > 1000
    db = open_db(server.data_dir / "appliance.db")
    ada = db.execute("select id from users where name = 'ada'").fetchone()[0]
    assert jobs.disk_by_user(db) == {ada: size}
    listing = server.cli("users", "list").splitlines()
    assert next(line for line in listing if line.startswith("ada ")).endswith(f"{size / 1e6:.1f} MB"), listing
    assert next(line for line in listing if line.startswith("bob ")).endswith(" 0.0 MB"), listing
    assert httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=h, timeout=10).status_code == 204
    assert jobs.disk_by_user(db).get(ada, 0) == 0
