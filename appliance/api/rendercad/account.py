"""The account figures RenderCAD shows in check, usage and plan_info, read from the appliance's ledger: the
billing cycle is the calendar month (UTC), grant tokens are the free bucket and pooled tokens the paid one."""
from __future__ import annotations

import calendar
from datetime import UTC, datetime

from appliance.store import ledger, users
from appliance.store import rendercad as store

TOKEN_COSTS = {"classic": 1, "pro": 2, "4k_upgrade": 2}


def cycle(now: datetime | None = None) -> tuple[str, str, str]:
    """(first day, last day, first day of the next cycle) of the current month, as YYYY-MM-DD."""
    now = now or datetime.now(UTC)
    last = calendar.monthrange(now.year, now.month)[1]
    nxt = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return (f"{now.year:04d}-{now.month:02d}-01", f"{now.year:04d}-{now.month:02d}-{last:02d}",
            f"{nxt[0]:04d}-{nxt[1]:02d}-01")


def figures(db, user_id: str) -> dict:
    start, end, reset = cycle()
    balance = ledger.balance(db, user_id)
    used = store.charged_since(db, user_id, start)
    return {"limit": used + balance["total"], "used": used, "remaining": balance["total"],
            "grant": balance["free"], "pooled": balance["paid"], "start": start, "end": end, "reset": reset}


def user_object(db, user_id: str) -> dict:
    user = users.get_user(db, user_id) or {"name": "", "plan": "studio"}
    f = figures(db, user_id)
    email = user["name"] if "@" in user["name"] else f"{user['name']}@appliance.local"
    return {"id": user_id, "email": email, "subscription_plan": user["plan"], "monthly_render_limit": f["limit"],
            "monthly_renders_used": f["used"], "grant_tokens_remaining": f["grant"],
            "pooled_tokens_remaining": f["pooled"]}


def usage(db, user_id: str) -> dict:
    f = figures(db, user_id)
    return {"monthly_limit": f["limit"], "monthly_used": f["used"], "monthly_remaining": f["remaining"],
            "grant_tokens_remaining": f["grant"], "pooled_tokens_remaining": f["pooled"],
            "pending_renders": store.active_count_jobs(db, user_id),
            "billing_cycle_start": f["start"], "billing_cycle_end": f["end"],
            "avg_render_times": {"avg_image_seconds": store.avg_seconds(db, user_id, "image"),
                                 "avg_video_seconds": store.avg_seconds(db, user_id, "video")}}


def plan_info(db, user_id: str) -> dict:
    user = users.get_user(db, user_id) or {"plan": "studio"}
    f = figures(db, user_id)
    return {"plan_name": user["plan"].title(), "plan_code": user["plan"], "plan_id": user["plan"],
            "monthly_credit_limit": f["limit"], "credits_used_this_month": f["used"],
            "credits_remaining": f["remaining"], "grant_tokens_remaining": f["grant"],
            "pooled_tokens_remaining": f["pooled"], "billing_cycle_start": f["start"],
            "billing_cycle_end": f["end"], "next_reset_date": f["reset"], "subscription_status": "active",
            "price_cents": 0, "cancel_at_period_end": False, "cancel_at": None}
