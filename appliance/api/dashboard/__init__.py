"""The operator dashboard, served by the appliance at `/`: sign-in (session.py), the HTML pages and their static
files (pages.py, static/), and the JSON API their script reads (api.py, views.py).

It is never open without an operator's session (`appliance operator add NAME`); a user's API key never opens it.
"""
from __future__ import annotations

from litestar import Router
from litestar.handlers import HTTPRouteHandler

from appliance.api.dashboard import api, pages

route_handlers: list[HTTPRouteHandler | Router] = [pages.root, pages.router, api.router]
html_error = pages.html_error  # the error shape of /dashboard/… pages (app.py ROUTERS)
api_error = api.error_response  # and of /dashboard/api/…

__all__ = ["api_error", "html_error", "route_handlers"]
