"""create_app(): the Litestar application — dialect routers, health, public outputs, OpenAPI."""
from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import metadata

from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.exceptions import HTTPException

from appliance.api import admin, dashboard, kodisc, openapi, rendercad, viralsync
from appliance.api.common import ErrorShape, http_error_response, internal_error, json_response
from appliance.core import Core
from appliance.delivery.httpfiles import serve_file
from appliance.observability import access, metrics
from appliance.services import models
from appliance.settings import Settings
from appliance.store import jobs

APP_MAX_BODY = 64 * 1024


@get("/healthz", include_in_schema=True)
async def healthz(request: Request) -> Response:
    core: Core = request.app.state.core
    return json_response({
        "status": "ok", "version": metadata.version("render-appliance"),
        "queue": jobs.queue_counts(core.db), "capacity": core.capacity.as_json(),
        "used": core.scheduler.used(), "sandbox": core.executor.mechanism, "worker": core.worker,
        "freeDiskMb": core.datadir.free_disk_mb(),
        "models": [models.public(e) for e in models.ModelRegistry.of(core.settings.data_dir).entries()],
    })


@get("/r/{job_id:str}/{name:str}", include_in_schema=False)
async def kodisc_output(request: Request, job_id: str, name: str) -> Response:
    """Kodisc result URLs are public (like the hosted CDN)."""
    return _serve(request, job_id, name)


@get("/outputs/{job_id:str}/{name:str}", include_in_schema=False)
async def viralsync_output(request: Request, job_id: str, name: str) -> Response:
    return _serve(request, job_id, name)


def _serve(request: Request, job_id: str, name: str) -> Response:
    core: Core = request.app.state.core
    job = jobs.get_job(core.db, job_id)
    path = core.datadir.file_path(job_id, name) if job and job["status"] == "completed" else None
    if path is None:
        return json_response({"error": "not found", "message": f"No output {name} for job {job_id}"}, 404)
    return serve_file(request, path)


ROUTERS = {"/api/v2": kodisc.error_response, "/v1": viralsync.error_response, "/admin": admin.error_response,
           "/backend": rendercad.error_response,
           # the dashboard: its JSON API in JSON, any other /dashboard/… path as an HTML page (not found, …)
           "/dashboard/api": dashboard.api_error, "/dashboard": dashboard.html_error}


def _plain(err) -> Response:
    return json_response({"error": err.code, "message": err.message}, err.status)


def _shape_of(request: Request) -> ErrorShape:
    """The error shape of the dialect whose prefix the path has, else a plain {error, message}."""
    for prefix, shape in ROUTERS.items():
        if request.url.path == prefix or request.url.path.startswith(prefix + "/"):
            return shape
    return _plain


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Litestar's own answers outside any router (no such path, wrong method) in the shape of the path's
    dialect; a 500-class one is a bug and is logged as one."""
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    return http_error_response(_shape_of(request), exc)


def _internal_error(request: Request, exc: Exception) -> Response:
    return _shape_of(request)(internal_error(request, exc))


def create_app(settings: Settings, core: Core | None = None) -> Litestar:
    core = core or Core(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar):
        await core.start()
        try:
            yield
        finally:
            await core.stop()

    core.jobs.listen("kodisc", kodisc.listener(core.jobs))
    core.jobs.listen("viralsync", viralsync.Webhooks(core.jobs))
    core.jobs.listen("rendercad", rendercad.listener(core.jobs))
    core.jobs.on_retry("rendercad", rendercad.Retried(core.jobs))
    app = Litestar(
        route_handlers=[healthz, kodisc_output, viralsync_output, kodisc.router, viralsync.router, admin.router,
                        openapi.assets_router(), *rendercad.route_handlers, metrics.metrics_endpoint,
                        *dashboard.route_handlers],
        lifespan=[lifespan],
        exception_handlers={HTTPException: _http_error, 500: _internal_error},
        dependencies={"service": Provide(lambda: core.jobs, sync_to_thread=False)},
        openapi_config=openapi.config(metadata.version("render-appliance")),
        # Small by default: a route that takes more says so itself (the dialects' routers, render.php, the
        # upload PUT). An unauthenticated body is read into memory before anything else runs.
        request_max_body_size=APP_MAX_BODY,
    )
    openapi.install(app)
    access.install(app, settings.access_log, core.metrics.refused)
    app.state.core = core
    admin.ensure_token(settings.data_dir)
    return app
