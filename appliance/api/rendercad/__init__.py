"""RenderCAD dialect: /backend/auth.php, render.php, api_discovery.php, the upload URLs, serve_render.php; the
public asset URLs /renders/{id}; the device sign-in page /auth_device.html.

Contract: seed rendercad-api.txt; DECISIONS.md (RenderCAD). An image render is the ``image`` pipeline. The
PHP-style endpoints pick their handler with ``?action=`` (common.dispatch)."""
from __future__ import annotations

from litestar import Request, Response, Router, route

from appliance.api.common import handlers_for
from appliance.api.rendercad import auth, pages
from appliance.api.rendercad.common import dispatch, error_response
from appliance.services.jobs import JobService

MAX_BODY = 1024 * 1024  # JSON bodies; uploads have their own limit


@route("/auth.php", http_method=["GET", "POST"], include_in_schema=False)
async def auth_php(request: Request, service: JobService) -> Response:
    return await dispatch(request, service, auth.ACTIONS)


backend = Router(path="/backend", route_handlers=[auth_php], exception_handlers=handlers_for(error_response),
                 request_max_body_size=MAX_BODY)
route_handlers = [backend, *pages.ROUTES]

__all__ = ["error_response", "route_handlers"]
