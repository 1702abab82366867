"""/backend/auth.php: check, usage, plan_info, the API tokens, and device-code sign-in for apps."""
from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from litestar import Request, Response

from appliance.api.common import json_response
from appliance.api.rendercad import account
from appliance.api.rendercad.common import Action, Ctx, RCError, authorize, ok, text_field
from appliance.store import rendercad as store
from appliance.store import users

MAX_TOKENS = 10
DEVICE_TTL_S = 600
POLL_INTERVAL_S = 3
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: the code is read and typed by people
WARNING = "Save this token now. You will not be able to see it again."


async def check(ctx: Ctx) -> Response:
    if ctx.key is None:
        return json_response({"success": False, "authenticated": False, "token_valid": False})
    return ok({"authenticated": True, "token_valid": True, "csrf_token": "csrf_" + secrets.token_hex(16),
               "token_costs": account.TOKEN_COSTS, "user": account.user_object(ctx.db, ctx.user_id)})


async def usage(ctx: Ctx) -> Response:
    return ok(account.usage(ctx.db, ctx.user_id))


async def plan_info(ctx: Ctx) -> Response:
    return ok(account.plan_info(ctx.db, ctx.user_id))


def _token_object(row: dict, active: bool = True) -> dict:
    data = {"id": row["id"], "token_name": row["token_name"], "scope": row["scope"],
            "created_at": row["created_at"], "last_used_at": row["last_used_at"], "usage_count": row["usage_count"]}
    return {**data, "is_active": bool(row["is_active"])} if active else data


async def get_api_tokens(ctx: Ctx) -> Response:
    tokens = [_token_object(t) for t in store.list_tokens(ctx.db, ctx.user_id) if t["is_active"]]
    return ok({"tokens": tokens, "max_tokens": MAX_TOKENS})


def _check_room(db, user_id: str) -> None:
    if store.active_count(db, user_id) >= MAX_TOKENS:
        raise RCError(400, f"Maximum of {MAX_TOKENS} API tokens reached. Revoke a token first.")


async def create_api_token(ctx: Ctx) -> Response:
    name = text_field(ctx.body, "token_name", required=True, max_len=100) or ""  # required: never None
    scope = ctx.body.get("scope", "full-access")
    if scope not in users.SCOPES:
        raise RCError(400, "scope must be one of: read-only, render-only, full-access")
    _check_room(ctx.db, ctx.user_id)
    ctx.admit()
    plaintext, row = store.create_token(ctx.db, ctx.user_id, name, scope)
    return ok({"message": "API token created successfully", "token": plaintext,
               "token_data": _token_object(row, active=False), "warning": WARNING})


def _token_id(ctx: Ctx) -> dict:
    token_id = ctx.body.get("token_id")
    if isinstance(token_id, str) and token_id.isdigit():
        token_id = int(token_id)
    if type(token_id) is not int:
        raise RCError(400, "token_id is required")
    if not 0 < token_id < 2**63:  # SQLite's integers are 64-bit: a larger id names no row
        raise RCError(404, "API token not found")
    row = store.find_token(ctx.db, ctx.user_id, token_id)
    if row is None or not row["is_active"]:
        raise RCError(404, "API token not found")
    return row


async def revoke_api_token(ctx: Ctx) -> Response:
    users.revoke_key(ctx.db, _token_id(ctx)["key_id"])
    return ok({"message": "API token revoked successfully"})


async def rename_api_token(ctx: Ctx) -> Response:
    row = _token_id(ctx)
    store.rename_token(ctx.db, row["id"], text_field(ctx.body, "new_name", required=True, max_len=100) or "")
    return ok({"message": "API token renamed successfully"})


# ---- device-code sign-in ---------------------------------------------------------------------------------------
async def _device_params(request: Request) -> dict:
    """The app's metadata from a JSON body, a form (multipart or urlencoded) or, with an empty body, the query
    string (what older extensions send)."""
    params = {k: request.query_params.get(k) for k in ("app_name", "app_type", "app_version")}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body() if content_type not in ("multipart/form-data",) else b""
    if content_type == "application/json" or (raw.strip() and content_type in ("", "text/plain")):
        try:
            data = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RCError(400, "Invalid JSON body") from None
        if not isinstance(data, dict):
            raise RCError(400, "Invalid JSON body")
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data = dict((await request.form()).items())
    elif raw.strip():
        raise RCError(415, "Content-Type must be application/json")
    else:
        data = {}
    params.update({k: data[k] for k in params if data.get(k) is not None})
    return {k: text_field(params, k, max_len=100) for k in params}


async def request_device_code(ctx: Ctx) -> Response:
    meta = await _device_params(ctx.request)
    for _ in range(20):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
        if store.get_device(ctx.db, code) is None:
            break
    store.create_device(ctx.db, code, meta, time.time() + DEVICE_TTL_S)
    query = urlencode({"code": code, **{k: v for k, v in meta.items() if v}})
    return ok({"code": code, "verification_url": f"{ctx.base}/auth_device.html?{query.replace('+', '%20')}",
               "expires_in": DEVICE_TTL_S, "poll_interval": POLL_INTERVAL_S})


def token_name(device: dict) -> str:
    """Token names derive from the app's metadata, as the hosted service names them."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    if not device["app_name"]:
        return f"Device - {stamp}"
    version = f" v{device['app_version']}" if device["app_version"] else ""
    return f"{device['app_name']}{version} - {stamp}"[:100]


async def poll_device_code(ctx: Ctx) -> Response:
    code = (ctx.query("code") or "").strip().upper()
    if not code:
        raise RCError(400, "Code parameter required")
    device = store.get_device(ctx.db, code)
    if device is None:
        raise RCError(404, "Invalid code")
    if device["status"] == "used" or (device["status"] != "approved" and time.time() > device["expires_at"]):
        return json_response({"status": "expired", "message": "Code has expired"})
    if device["status"] == "pending":
        return json_response({"status": "pending", "message": "Waiting for user authorization"})
    if not store.consume_device(ctx.db, code):
        return json_response({"status": "expired", "message": "Code has expired"})
    _check_room(ctx.db, device["user_id"])
    plaintext, _ = store.create_token(ctx.db, device["user_id"], token_name(device), "full-access")
    return json_response({"status": "authorized", "api_token": plaintext, "message": "Authorization successful"})


def approve(db, code: str, user_id: str) -> None:
    """The one rule for approving a code, shared by the verification page and `appliance device approve`."""
    device = store.get_device(db, code.strip().upper())
    if device is None:
        raise RCError(404, "Invalid code")
    if device["status"] != "pending" or time.time() > device["expires_at"]:
        raise RCError(409, "Code has expired or was already used")
    _check_room(db, user_id)
    if not store.approve_device(db, device["code"], user_id):
        raise RCError(409, "Code has expired or was already used")


ACTIONS = {
    "check": Action("GET", "optional", check),
    "usage": Action("GET", "read-only", usage),
    "plan_info": Action("GET", "read-only", plan_info),
    "get_api_tokens": Action("GET", "read-only", get_api_tokens),
    "create_api_token": Action("POST", "full-access", create_api_token),
    "revoke_api_token": Action("POST", "full-access", revoke_api_token),
    "rename_api_token": Action("POST", "full-access", rename_api_token),
    "request_device_code": Action("POST", None, request_device_code, json_body=False),
    "poll_device_code": Action("GET", None, poll_device_code),
}

__all__ = ["ACTIONS", "approve", "authorize"]
