"""Request-rate limits, exactly the seed's table: fixed windows per token (per client address where the
endpoint has no token), counted in SQLite so a restart does not hand out a fresh allowance. Endpoints the
table leaves unlimited (render submit, presign, history, cancel, delete, check, usage, plan_info) send no
X-RateLimit-* headers."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from litestar import Request, Response

from appliance.api.common import json_response
from appliance.store import rendercad as store
from appliance.store import users


@dataclass(frozen=True)
class Limit:
    endpoint: str  # the X-RateLimit-Endpoint value, and the bucket the count is kept in
    limit: int
    window: int  # seconds
    late: bool = False  # counted by the handler once its own checks pass (Ctx.admit)


HOUR = 3600
STATUS = Limit("status", 120, 60)  # render and video status polling, combined
DISCOVERY = Limit("discovery", 60, HOUR)
WEBHOOK_WRITE = "webhook_write"  # register and delete share one count
DEVICE_AUTHORIZE = Limit("device_code_authorize", 5, HOUR)

TABLE: dict[tuple[str, str], Limit] = {
    ("render.php", "status"): STATUS,
    ("video.php", "status"): STATUS,
    # counted once the request is valid (Ctx.admit), so a rejected field does not use up the allowance
    ("video.php", "create_job"): Limit("video_generate", 10, 300, late=True),
    ("video.php", "convert"): Limit("video_convert", 20, 300, late=True),
    ("auth.php", "request_device_code"): Limit("device_code_request", 10, HOUR),
    ("auth.php", "poll_device_code"): Limit("device_code_poll", 60, 600),
    ("auth.php", "get_api_tokens"): Limit("api_token_list", 120, HOUR),
    # 10 an hour for each of create, revoke and rename; a create refused by the 10-token cap is not counted,
    # so the cap's own 400 still tells a client what to fix.
    ("auth.php", "create_api_token"): Limit("api_token_create", 10, HOUR, late=True),
    ("auth.php", "revoke_api_token"): Limit("api_token_revoke", 10, HOUR),
    ("auth.php", "rename_api_token"): Limit("api_token_rename", 10, HOUR),
    ("webhooks.php", "list"): Limit("webhook_list", 60, HOUR),
    ("webhooks.php", "register"): Limit(WEBHOOK_WRITE, 10, HOUR, late=True),
    ("webhooks.php", "delete"): Limit(WEBHOOK_WRITE, 10, HOUR),
    **{("api_discovery.php", a): DISCOVERY for a in ("models", "conditions", "backgrounds", "textures",
                                                     "video_options")},
}


def for_request(request: Request, action: str) -> Limit | None:
    return TABLE.get((request.url.path.rsplit("/", 1)[-1], action))


def counted_late(limit: Limit | None) -> bool:
    return limit is not None and limit.late


def subject(request: Request, key: users.ApiKey | None) -> str:
    return f"key:{key.id}" if key else f"ip:{request.client.host if request.client else '?'}"


def check(db, limit: Limit, who: str) -> tuple[dict[str, str], Response | None]:
    """Count this request: (the X-RateLimit-* headers, a 429 response when it is over the limit)."""
    now = time.time()
    count, start = store.hit(db, who, limit.endpoint, limit.window, now)
    reset = start + limit.window
    headers = {"X-RateLimit-Endpoint": limit.endpoint, "X-RateLimit-Limit": str(limit.limit),
               "X-RateLimit-Remaining": str(max(0, limit.limit - count)), "X-RateLimit-Reset": str(math.ceil(reset))}
    if count <= limit.limit:
        return headers, None
    wait = max(1, math.ceil(reset - now))
    response = json_response({"error": f"Rate limit exceeded: at most {limit.limit} requests per "
                                       f"{_window_words(limit.window)}. Retry after {wait} seconds.",
                              "retry_after": wait}, 429)
    response.headers.update({**headers, "Retry-After": str(wait)})
    return headers, response


def _window_words(seconds: int) -> str:
    if seconds % HOUR == 0:
        return "hour" if seconds == HOUR else f"{seconds // HOUR} hours"
    return "minute" if seconds == 60 else f"{seconds // 60} minutes"
