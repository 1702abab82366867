"""Plan limits and metering on a real SQLite store (the quota paths need minutes already used)."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from types import SimpleNamespace

import pytest

from appliance.api.viralsync import VsError, check_plan
from appliance.services import plans
from appliance.store import jobs, users
from appliance.store.db import dumps, now_iso, open_db

MOVIE = {"width": 1280, "height": 720, "fps": 30, "scenes": [{"id": "s", "duration": 60, "layers": []}]}


@pytest.fixture
def core(tmp_path):
    return SimpleNamespace(db=open_db(tmp_path / "appliance.db"))


def _used(core, user_id: str, seconds: float, status: str = "completed") -> None:
    job = jobs.create_job(core.db, job_id=f"job_{len(jobs.list_jobs(core.db)):012x}", dialect="viralsync",
                          user_id=user_id, key_id=None, kind="movie", request={}, tasks=[])
    jobs.update_job(core.db, job["id"], status=status, completed_at=now_iso(),
                    result=dumps({"meta": {"duration": seconds}}))


def code(core, user, plan, movie=MOVIE) -> str:
    with pytest.raises(VsError) as err:
        check_plan(core, user, plan, movie)
    return err.value.code


def test_render_minutes_are_output_duration_of_completed_jobs_only(core):
    user = users.create_user(core.db, "ada", plan="pro")
    _used(core, user["id"], 90)
    _used(core, user["id"], 600, status="failed")
    _used(core, user["id"], 600, status="cancelled")
    assert plans.minutes_used(core.db, user["id"], plans.month_bounds()[0]) == 1.5


def test_monthly_quota(core):
    user = users.create_user(core.db, "ada", plan="pro")
    check_plan(core, user, plans.PLANS["pro"], MOVIE)
    _used(core, user["id"], 200 * 60)
    assert code(core, user, plans.PLANS["pro"]) == "RENDER_QUOTA_EXCEEDED"


def test_daily_cap(core):
    user = users.create_user(core.db, "ada", plan="free")
    _used(core, user["id"], 5 * 60)
    daily_only = replace(plans.PLANS["free"], minutes_per_month=None)
    assert code(core, user, daily_only) == "RENDER_QUOTA_DAILY_EXCEEDED"


def test_resolution_uses_pixel_count_so_portrait_1080p_passes_pro(core):
    user = users.create_user(core.db, "ada", plan="pro")
    check_plan(core, user, plans.PLANS["pro"], {**MOVIE, "width": 1080, "height": 1920})
    assert code(core, user, plans.PLANS["pro"], {**MOVIE, "width": 2560, "height": 1440}) == "PLAN_RESOLUTION_EXCEEDED"


def test_month_bounds_roll_over_the_year():
    from datetime import datetime

    start, end = plans.month_bounds(datetime(2026, 12, 15, tzinfo=UTC))
    assert (start.month, end.year, end.month, end.day) == (12, 2027, 1, 1)
