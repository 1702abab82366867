"""/backend/webhooks.php (register, list, delete) and the deliveries: render.completed|failed from the job
listener, credits.exhausted when a settle leaves the user at 0 tokens. Each registered webhook has its own
`whsec_` secret, stored on its delivery rows, so the outbox signs with it (not with the key's)."""
from __future__ import annotations

import secrets
from typing import Any

from litestar import Response

from appliance.api.rendercad import account
from appliance.api.rendercad.common import Action, Ctx, RCError, ok, text_field
from appliance.api.rendercad.uploads import REFUSALS
from appliance.delivery import netpolicy
from appliance.services.jobs import JobService
from appliance.store import ids, ledger
from appliance.store import rendercad as store
from appliance.store.db import dumps, now_iso
from appliance.store.rows import JobRow

EVENTS = ("render.completed", "render.failed", "video.completed", "video.failed", "credits.exhausted")
MAX_PER_ACCOUNT = 5


def _public(row: dict) -> dict:
    return {"id": row["id"], "url": row["url"], "events": row["events"], "status": "active",
            "created_at": row["created_at"]}


async def register(ctx: Ctx) -> Response:
    url = text_field(ctx.body, "url", required=True, max_len=2048)
    settings = ctx.service.settings
    try:
        netpolicy.parse(url, allow_http=settings.allow_http_webhooks, allow_loopback=settings.allow_loopback_targets)
    except netpolicy.RefusedURL as exc:
        raise RCError(400, f"url: {exc}") from None
    events = ctx.body.get("events")
    if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
        raise RCError(400, "events must be a non-empty array of: " + ", ".join(EVENTS))
    if len(store.webhooks_of(ctx.db, ctx.user_id)) >= MAX_PER_ACCOUNT:
        raise RCError(400, f"Maximum of {MAX_PER_ACCOUNT} webhooks per account: delete one first")
    assert ctx.key is not None and url is not None
    ctx.admit()  # a register refused by the 5-webhook cap is not counted
    secret = "whsec_" + secrets.token_hex(24)
    row = store.create_webhook(ctx.db, ctx.user_id, ctx.key.id, url, list(dict.fromkeys(events)), secret)
    return ok({**_public(row), "secret": secret})  # the only time the secret is shown


async def list_(ctx: Ctx) -> Response:
    return ok({"webhooks": [{**_public(w), "last_triggered_at": w["last_triggered_at"],
                             "last_success_at": w["last_success_at"], "failure_count": w["failure_count"]}
                            for w in store.webhooks_of(ctx.db, ctx.user_id)]})


async def delete(ctx: Ctx) -> Response:
    webhook_id = ctx.body.get("id")
    if isinstance(webhook_id, str) and webhook_id.isdigit():
        webhook_id = int(webhook_id)
    if not isinstance(webhook_id, int) or isinstance(webhook_id, bool):
        raise RCError(400, "id is required")
    if not 0 < webhook_id < 2**63:  # SQLite's integers are 64-bit: a larger id names no row
        raise RCError(404, "Webhook not found")
    if not store.delete_webhook(ctx.db, ctx.user_id, webhook_id):
        raise RCError(404, "Webhook not found")
    return ok({"message": "Webhook deleted"})


ACTIONS = {
    "register": Action("POST", "full-access", register),
    "list": Action("GET", "read-only", list_),
    "delete": Action("POST", "full-access", delete),
}


# ---- deliveries ------------------------------------------------------------------------------------------------
def fire(service: JobService, user_id: str, job_id: str, event: str, data: dict) -> None:
    """One durable delivery per subscribed webhook; the body names its own delivery id."""
    for hook in store.webhooks_of(service.db, user_id, event):
        delivery_id = ids.delivery_id()
        body = {"event_type": event, "delivery_id": delivery_id, "timestamp": now_iso(), **data}
        service.webhooks.enqueue(job_id=job_id, dialect="rendercad", key_id=hook["key_id"], url=hook["url"],
                                 event=event, body=dumps(body).encode(), secret=hook["secret"],
                                 delivery_id=delivery_id)


def job_ended(service: JobService, job: JobRow, error: str | None) -> None:
    """render.completed / render.failed for a finished core job; credits.exhausted when it spent the last token."""
    base, kind = service.settings.base_url, "video" if job.get("kind") == "video" else "render"
    done = job["status"] == "completed"
    data: dict[str, Any] = {"job_id": job["id"], "status": "completed" if done else "failed",
            "completed_at": job["completed_at"] or now_iso()}
    if done and kind == "video":  # the seed's video.completed names the clip video_url
        data = {**data, "video_url": f"{base}/renders/{job['id']}.mp4", "processing_time_ms": job.get("duration_ms")}
    elif done:
        data = {**data, "output_url": f"{base}/renders/{job['id']}", "processing_time_ms": job.get("duration_ms")}
    elif job["error"] in REFUSALS:  # an upload finalize refused: the job never ran (these fields in this order)
        data = {"job_id": job["id"], "status": "failed", "error": error,
                "input_url": f"{base}/renders/{job['id']}_input", "completed_at": data["completed_at"]}
    else:
        data = {**data, "error": error, "input_url": f"{base}/renders/{job['id']}_input"}
    fire(service, job["user_id"], job["id"], f"{kind}.{'completed' if done else 'failed'}", data)
    if done and ledger.balance(service.db, job["user_id"])["total"] <= 0:
        f = account.figures(service.db, job["user_id"])
        fire(service, job["user_id"], job["id"], "credits.exhausted",
             {"user_id": job["user_id"], "credits_used": f["used"], "credits_limit": f["limit"],
              "billing_cycle_end": f["end"]})
