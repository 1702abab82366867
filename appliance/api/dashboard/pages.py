"""The dashboard's HTML: the sign-in page at `/`, sign-out, the page shell every section shares, and its static
files. Hand-written HTML, CSS and JavaScript from static/: no CDN, no build step, works air-gapped."""
from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.response import Redirect

from appliance.api.common import as_appliance_error, internal_error
from appliance.api.dashboard import session
from appliance.cli.text import command
from appliance.errors import ApplianceError
from appliance.services.jobs import JobService
from appliance.store import operators

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
HOME = "/dashboard/jobs"
# Only the appliance's own files; no inline script; media from the appliance itself (blob: is the live player's
# MediaSource, fed from the appliance's own segments); never framed.
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                      "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                                      "form-action 'self'; base-uri 'none'"}


@cache
def _template(name: str) -> str:
    return (STATIC / name).read_text()


def html_page(body: str, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body, status_code=status, media_type="text/html",
                    headers={**HEADERS, **(headers or {})})


def html_error(exc: ApplianceError) -> Response:
    """Errors under /dashboard as a page (an unknown page, a refused form), never JSON."""
    body = _template("error.html").replace("{{status}}", str(exc.status)).replace("{{message}}",
                                                                                   html.escape(exc.message))
    return html_page(body, exc.status)


def login_page(service: JobService, error: str = "", status: int = 200) -> Response:
    hint = "" if operators.count_operators(service.db) else (
        '<p class="hint">No operator account exists yet. On the appliance, run '
        f"<code>{html.escape(command())} operator add NAME</code> (it asks for a password), then sign in here.</p>")
    body = (_template("login.html").replace("{{hint}}", hint)
            .replace("{{error}}", f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""))
    return html_page(body, status)


@get("/", include_in_schema=False)
async def root(request: Request, service: JobService) -> Response:
    """A browser at the appliance's address: the sign-in page, or the jobs when signed in."""
    if session.current(request, service):
        return Redirect(HOME, status_code=303)
    return login_page(service)


@get("/login")
async def login_form(request: Request, service: JobService) -> Response:
    if session.current(request, service):
        return Redirect(HOME, status_code=303)
    return login_page(service)


@post("/login", status_code=303)
async def login(request: Request, service: JobService) -> Response:
    session.check_origin(request, service)
    address = request.client.host if request.client else "?"
    if session.throttled(address):
        return login_page(service, "Too many failed sign-ins from this address. Wait a few minutes.", 429)
    form = await request.form()
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    found = operators.authenticate(service.db, name, password) if name and password else None
    if found is None:
        session.failed(address)
        return login_page(service, "Wrong operator name or password.", 401)
    token, _ = operators.open_session(service.db, found["id"], session.lifetime_s(service))
    return session.set_cookie(Redirect(HOME, status_code=303), service, token)


@post("/logout", status_code=303)
async def logout(request: Request, service: JobService, op: dict) -> Response:
    operators.close_session(service.db, request.cookies.get(session.COOKIE, ""))
    return session.clear_cookie(Redirect("/", status_code=303))


@get(["", "/jobs", "/jobs/{job_id:str}", "/capacity", "/users", "/device"])
async def shell(op: dict) -> Response:
    """Every section is the same shell; static/app.js draws the section the address names."""
    body = (_template("app.html").replace("{{csrf}}", html.escape(op["csrf"]))
            .replace("{{operator}}", html.escape(op["operator"])))
    return html_page(body)


@get("/static/{name:str}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApplianceError(f"No such file: {name}", status=404, code="not_found")
    return Response(_template(name), media_type=ASSETS[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def _signed_out(request: Request, exc: session.SignInRequired) -> Response:
    return Redirect("/dashboard/login", status_code=303)


def _error(request: Request, exc: ApplianceError) -> Response:
    return html_error(exc)


def _http(request: Request, exc: HTTPException) -> Response:
    return html_error(as_appliance_error(exc))


def _unexpected(request: Request, exc: Exception) -> Response:
    return html_error(internal_error(request, exc))


router = Router(path="/dashboard", route_handlers=[login_form, login, logout, shell, asset],
                dependencies={"op": Provide(session.operator_session)}, include_in_schema=False,
                request_max_body_size=16 * 1024,
                exception_handlers={session.SignInRequired: _signed_out, ApplianceError: _error,
                                    HTTPException: _http, 500: _unexpected})
