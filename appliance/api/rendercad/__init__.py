"""RenderCAD dialect: /backend/auth.php, render.php, webhooks.php, api_discovery.php, the upload URLs,
serve_render.php; the public asset URLs /renders/{id}; the device sign-in page /auth_device.html.

Contract: seed rendercad-api.txt; DECISIONS.md (RenderCAD). An image render is the ``image`` pipeline. The
PHP-style endpoints pick their handler with ``?action=`` (common.dispatch)."""
from __future__ import annotations

import uuid
from pathlib import Path

from litestar import Request, Response, Router, get, route
from litestar.handlers import HTTPRouteHandler

from appliance.api.common import handlers_for, json_response
from appliance.api.rendercad import auth, discovery, legacy, pages, render, uploads, video, webhooks
from appliance.api.rendercad.common import authorize, dispatch, error_response
from appliance.delivery.httpfiles import serve_file
from appliance.services.jobs import JobService
from appliance.store import rendercad as store
from appliance.store.rows import JobRow

MAX_BODY = 1024 * 1024  # JSON bodies; uploads have their own limit
OUTPUT = "render.jpg"


@route("/auth.php", http_method=["GET", "POST"], include_in_schema=False)
async def auth_php(request: Request, service: JobService) -> Response:
    return await dispatch(request, service, auth.ACTIONS)


@route("/render.php", http_method=["GET", "POST"], include_in_schema=False, request_max_body_size=legacy.MAX_BODY)
async def render_php(request: Request, service: JobService) -> Response:
    """The legacy action=render takes the image inline, hence the larger body limit here."""
    return await dispatch(request, service, legacy.ACTIONS)


@route("/webhooks.php", http_method=["GET", "POST"], include_in_schema=False)
async def webhooks_php(request: Request, service: JobService) -> Response:
    return await dispatch(request, service, webhooks.ACTIONS)


@route("/video.php", http_method=["GET", "POST"], include_in_schema=False)
async def video_php(request: Request, service: JobService) -> Response:
    return await dispatch(request, service, video.ACTIONS)


@route("/api_discovery.php", http_method=["GET", "POST"], include_in_schema=False)
async def discovery_php(request: Request, service: JobService) -> Response:
    return await dispatch(request, service, discovery.ACTIONS)


@route("/upload/{job_id:str}/{slot:str}", http_method=["PUT"], include_in_schema=False,
       request_max_body_size=None)
async def upload(request: Request, service: JobService, job_id: str, slot: str) -> Response:
    return await uploads.receive(request, service, job_id, slot)


@get("/serve_render.php", include_in_schema=False)
async def serve_render(request: Request, service: JobService) -> Response:
    """The authenticated proxy output_url: the owner's finished render."""
    key = authorize(request, service, "read-only")
    assert key is not None
    job_id = request.query_params.get("id", "")
    row = store.get_job(service.db, job_id, key.user_id)
    path = service.datadir.file_path(job_id, video.OUTPUTS.get(row["kind"], OUTPUT)) if row else None
    if path is None:
        return json_response({"error": "Render not found"}, 404)
    return serve_file(request, path)


@get("/renders/{name:str}", include_in_schema=False)
async def asset(request: Request, service: JobService, name: str) -> Response:
    """The public asset URLs: {job_id} is the render, {job_id}_input the uploaded image."""
    job_id = name[:-len("_input")] if name.endswith("_input") else video.asset_job_id(name)
    row = store.one_job(service.db, job_id)
    path = None
    if row and name.endswith("_input") and row["error"] not in uploads.REFUSALS:  # a refused upload is
        got = store.uploads_of(service.db, job_id).get("input_main")           # never served
        path = Path(got["path"]) if got and got["path"] else None
    elif row:
        path = service.datadir.file_path(job_id, video.OUTPUTS.get(row["kind"], OUTPUT))
    if path is None or not path.is_file():
        return json_response({"error": "Not found"}, 404)
    return serve_file(request, path)


def listener(service: JobService):
    """On a job's end (the core settled the fixed token price: NewJob.charge) the registered webhooks are told:
    render.* or video.*, a refused upload's failure included; cancelled is no webhook event."""
    def on_event(job: JobRow, event_type: str) -> None:
        if event_type in ("completed", "failed") and job.get("kind") != "video_convert":  # a GIF sends none
            shown = video.display_error if job.get("kind") == "video" else render.display_error
            webhooks.job_ended(service, job, None if event_type == "completed" else uploads.shown_error(job["error"],
                                                                                                        shown))
    return on_event


class Retried:
    """The operator retried a RenderCAD job (dashboard or admin API): the copy gets an id of RenderCAD's shape
    for its kind and a rendercad_jobs row of its own (with its uploads), so the owner sees it in history and
    status like any job they finalized. Without the row it ran unseen, and its price was charged all the same."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def new_id(self, job: JobRow) -> str:
        return render.new_job_id() if job["id"].startswith("render_") else str(uuid.uuid4())

    def cloned(self, old: JobRow, new: JobRow) -> None:
        store.copy_job(self.service.db, old["id"], new["id"], uploads.link_all(self.service, old["id"], new["id"]))


backend = Router(path="/backend", route_handlers=[auth_php, render_php, webhooks_php, discovery_php, video_php, upload,
                                                       serve_render, discovery.thumb],
                 exception_handlers=handlers_for(error_response), request_max_body_size=MAX_BODY)
route_handlers: list[Router | HTTPRouteHandler] = [backend, asset, *pages.ROUTES]

__all__ = ["Retried", "error_response", "listener", "route_handlers"]
