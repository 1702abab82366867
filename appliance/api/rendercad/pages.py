"""The device-code verification page (`verification_url`): a person approves an app's code by signing in with
one of their existing full-access RenderCAD tokens, or links an operator to the dashboard's device page (operator
sign-in). Plain HTML, no scripts, no external resources."""
from __future__ import annotations

import html

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body

from appliance.api.auth import authenticate
from appliance.api.rendercad import limits
from appliance.api.rendercad.auth import approve
from appliance.api.rendercad.common import SCOPE_RANK, RCError
from appliance.errors import Unauthorized
from appliance.services.jobs import JobService

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Authorize an app - RENDERCAD</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>body{{font-family:system-ui,sans-serif;
max-width:32rem;margin:3rem auto;padding:0 1rem}}code{{font-size:1.6rem;letter-spacing:.2em}}input{{width:100%;
padding:.5rem;margin:.5rem 0}}button{{padding:.5rem 1.5rem}}.err{{color:#b00020}}</style></head><body>
<h1>Authorize {app}</h1>{body}</body></html>"""
FORM = """<p>{app} ({kind}) asks for access to your RENDERCAD account with the code</p><p><code>{code}</code></p>
<p>Sign in with one of your full-access API tokens to approve it.</p>{error}
<form method="post" action="/auth_device.html"><input type="hidden" name="code" value="{code}">
<label>API token<input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Authorize</button></form>
<p>Operator of this appliance? <a href="/dashboard/device">Sign in to the dashboard</a> to approve the code for
any user.</p>"""


FORM_MAX_BODY = 8 * 1024  # a device code and a token, form-encoded; read before the client is known
# A person pastes a full-access token here: no other origin may frame the page (clickjacking).
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                "Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}


def _page(app: str, body: str, status: int = 200) -> Response:
    return Response(PAGE.format(app=html.escape(app or "an app"), body=body), status_code=status,
                    media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def _form(query: dict, code: str, error: str = "") -> str:
    esc = {k: html.escape(str(query.get(k) or "")) for k in ("app_name", "app_type")}
    return FORM.format(app=esc["app_name"] or "An app", kind=esc["app_type"] or "app", code=html.escape(code),
                       error=f'<p class="err">{html.escape(error)}</p>' if error else "")


@get("/auth_device.html", include_in_schema=False)
async def device_page(request: Request) -> Response:
    query = dict(request.query_params)
    code = (query.get("code") or "").strip().upper()
    if not code:
        return _page("", "<p>This link has no code. Start the sign-in again from the app.</p>", 400)
    return _page(query.get("app_name", ""), _form(query, code))


@post("/auth_device.html", include_in_schema=False, status_code=200, request_max_body_size=FORM_MAX_BODY)
async def device_approve(request: Request, service: JobService,
                         data: dict = Body(media_type=RequestEncodingType.URL_ENCODED)) -> Response:
    code, token = str(data.get("code", "")).strip().upper(), str(data.get("token", "")).strip()
    _, refused = limits.check(service.db, limits.DEVICE_AUTHORIZE, limits.subject(request, None))
    if refused is not None:  # per client address: the form's token is what is being guessed
        return _page("", _form({}, code, "Too many attempts. Try again later."), 429)
    try:
        key = authenticate(service.db, "rendercad", token)
        if SCOPE_RANK[key.scope] < SCOPE_RANK["full-access"]:
            raise RCError(403, "That token is not a full-access token.")
        approve(service.db, code, key.user_id)
    except Unauthorized:
        return _page("", _form({}, code, "That API token is not valid."), 401)
    except RCError as exc:
        return _page("", _form({}, code, exc.message), exc.status)
    return _page("", "<p>Authorized. You can close this window and return to the app.</p>")


ROUTES = [device_page, device_approve]
