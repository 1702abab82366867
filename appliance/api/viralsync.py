"""ViralSync dialect: Movie JSON render jobs under /v1 (seed viralsync-render-api.txt; api-research.md §2).

A movie job = planning (fetch media, hash scenes) → N scene tasks + 1 assemble task on the core's DAG.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import TYPE_CHECKING

from litestar import Request, Response, Router, delete, get, post
from litestar.response import Stream

from appliance.store import events, jobs, users

from appliance import ids

from appliance.services import plans
from appliance.api.auth import authenticate, bearer
from appliance.store.db import dumps, loads, now_iso
from appliance.errors import ApplianceError, Unauthorized
from appliance.delivery.httpfiles import json_response
from appliance.store.jobs import TaskDef
from appliance.api.ratelimit import SlidingWindow
from appliance.delivery.webhooks import TargetRefused, check_target, enqueue

if TYPE_CHECKING:
    from appliance.core import Core

log = logging.getLogger("appliance.viralsync")
PRESETS = {"stable": 2, "balanced": 3, "fast": 4, "turbo": 6}
TERMINAL_EVENTS = {"completed": "done", "failed": "failed", "cancelled": "cancelled"}
PROGRESS_WEBHOOK_EVERY_S = 5.0
KEEPALIVE_S = 15.0


class VsError(ApplianceError):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.headers = headers or {}


def error_response(exc: ApplianceError) -> Response:
    if isinstance(exc, Unauthorized):
        code = "API_KEY_REVOKED" if exc.code == "revoked" else "UNAUTHORIZED"
        return json_response({"error": f"{exc.message}. Send x-api-key: vs_prod_…", "code": code}, 401)
    return json_response({"error": exc.message, "code": exc.code}, exc.status, getattr(exc, "headers", None))


def _token(request: Request) -> str | None:
    return request.headers.get("x-api-key") or bearer(request) or request.query_params.get("api_key")


def _auth(core: Core, request: Request, limiter: SlidingWindow) -> users.ApiKey:
    key = authenticate(core.db, "viralsync", _token(request))
    wait = limiter.hit(key.id)
    if wait:
        raise VsError(429, "RATE_LIMITED", f"Rate limit exceeded. Retry after {wait} seconds.",
                      {"Retry-After": str(wait)})
    return key


def _user_plan(core: Core, key: users.ApiKey) -> tuple[dict, plans.Plan]:
    user = users.get_user(core.db, key.user_id)
    return user, plans.PLANS[user["plan"]]


# ---- the job object ------------------------------------------------------------------------------
def children(tasks: list[dict]) -> dict:
    count = lambda *states: sum(t["status"] in states for t in tasks)
    return {"total": len(tasks), "succeeded": count("done"), "running": count("running"),
            "queued": count("queued"), "failed": count("failed")}


def public_status(job: dict, tasks: list[dict]) -> tuple[str, str | None]:
    status = job["status"]
    if status in TERMINAL_EVENTS:
        return TERMINAL_EVENTS[status], None
    if job["phase"] in ("planning", "dispatching"):
        return "running", job["phase"]
    scenes_left = any(t["renderer"] == "movie.scene" and t["status"] != "done" for t in tasks)
    if status == "queued" and not any(t["status"] != "queued" for t in tasks):
        return "queued", None
    if scenes_left:
        return "waiting", "rendering"
    return "running", "assembling"


def job_object(core: Core, job: dict) -> dict:
    tasks = jobs.tasks_of(core.db, job["id"])
    status, phase = public_status(job, tasks)
    result = loads(job["result"]) or {}
    done = status == "done"
    meta = result.get("meta", {})
    return {"jobId": job["id"], "type": "render", "status": status, "phase": phase,
            "progress": 1.0 if done else round(job["progress"] or 0.0, 4), "parentJobId": None,
            "outputUrl": f"{core.settings.base_url}/outputs/{job['id']}/output.mp4" if done else None,
            "error": _error(job, tasks) if status == "failed" else None,
            "mediaData": {k: meta.get(k) for k in ("duration", "width", "height", "fileSize")} if done else None,
            "payload": loads(job["request"]),
            "children": children(tasks), "createdAt": job["created_at"], "updatedAt": job["updated_at"]}


def _error(job: dict, tasks: list[dict]) -> str:
    failed = next((t for t in tasks if t["status"] == "failed" and t["renderer"] == "movie.scene"), None)
    if failed:
        return f"SCENE_RENDER_FAILED: {failed['error']} on {failed['name']}"
    return job["error"]


def event_body(core: Core, job: dict, event_type: str) -> tuple[str, dict]:
    """(event name, JSON) shared by SSE and webhooks (api-research.md §2.8)."""
    obj = job_object(core, job)
    name = TERMINAL_EVENTS.get(job["status"], "progress") if event_type != "progress" else "progress"
    body = {"jobId": obj["jobId"], "status": obj["status"] if name != "progress" else "running",
            "phase": obj["phase"], "progress": obj["progress"], "outputUrl": obj["outputUrl"],
            "timestamp": now_iso()}
    if name == "progress":
        body["children"] = obj["children"]
    if name == "done":
        body["mediaData"] = obj["mediaData"]
    if name == "failed":
        body["error"] = obj["error"]
    return name, body


# ---- submission ----------------------------------------------------------------------------------
def parse_submission(body: bytes) -> dict:
    from renderers.movie.spec import SpecError, validate_and_normalize

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise VsError(400, "INVALID_MOVIE_JSON", "Request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise VsError(400, "INVALID_MOVIE_JSON", "Request body must be a JSON object")
    if data.get("kind") != "movie":
        raise VsError(400, "INVALID_MOVIE_JSON", 'kind must be "movie"')
    if not isinstance(data.get("projectId"), str) or not data["projectId"]:
        raise VsError(400, "INVALID_MOVIE_JSON", "projectId is required")
    if not isinstance(data.get("movie"), dict):
        raise VsError(400, "INVALID_MOVIE_JSON", "movie is required")
    try:
        data["movie"] = validate_and_normalize(data["movie"])
    except SpecError as exc:
        raise VsError(400, "INVALID_MOVIE_JSON", f"movie.{exc}") from None
    data["renderOptions"] = _render_options(data.get("renderOptions"))
    return data


def _render_options(options) -> dict:
    options = options if isinstance(options, dict) else {}
    preset = options.get("qualityPreset", "balanced")
    if preset not in PRESETS:
        raise VsError(400, "INVALID_MOVIE_JSON", "renderOptions.qualityPreset must be one of: "
                                                 "stable, balanced, fast, turbo")
    requested = options.get("requestedConcurrency")
    if requested is not None and (type(requested) is not int or not 1 <= requested <= 32):
        raise VsError(400, "INVALID_MOVIE_JSON", "renderOptions.requestedConcurrency must be an integer 1-32")
    return {"qualityPreset": preset, "requestedConcurrency": requested}


def check_plan(core: Core, user: dict, plan: plans.Plan, movie: dict) -> None:
    if movie["width"] * movie["height"] > plan.max_pixels:
        raise VsError(400, "PLAN_RESOLUTION_EXCEEDED", f"{movie['width']}x{movie['height']} exceeds the "
                                                       f"{plan.name} plan's maximum resolution")
    minutes = sum(s["duration"] for s in movie["scenes"]) / 60
    if minutes > plan.max_job_minutes:
        raise VsError(400, "PLAN_DURATION_EXCEEDED", f"Total duration {minutes:.1f} min exceeds the {plan.name} "
                                                     f"plan's per-job limit of {plan.max_job_minutes:g} min")
    start, _ = plans.month_bounds()
    if plan.minutes_per_month is not None and plans.minutes_used(core.db, user["id"], start) >= plan.minutes_per_month:
        raise VsError(402, "RENDER_QUOTA_EXCEEDED", "Monthly render minute limit reached. Wait for the monthly "
                                                    "reset or ask the admin to upgrade the plan.")
    if plan.daily_minutes is not None and plans.minutes_used(core.db, user["id"], plans.today_start()) >= plan.daily_minutes:
        raise VsError(402, "RENDER_QUOTA_DAILY_EXCEEDED", "Daily render cap reached. Resets at midnight UTC.")
    active = [j for j in jobs.list_jobs(core.db, user_id=user["id"], dialect="viralsync", limit=1000)
              if j["status"] in ("queued", "running")]
    if plan.concurrency is not None and len(active) >= plan.concurrency:
        raise VsError(409, "CONCURRENCY_LIMIT_EXCEEDED",
                      "Concurrent job limit reached. Wait for a running job to complete.")


def workers_for(core: Core, options: dict, scene_count: int) -> int:
    wanted = options["requestedConcurrency"] or PRESETS[options["qualityPreset"]]
    return max(1, min(wanted, scene_count, int(core.capacity.cpu)))


class ViralSync:
    """Holds the dialect's per-server state (rate limiter, planner tasks)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.limiter = SlidingWindow(core.settings.rate_limit_requests, core.settings.rate_limit_window_s)
        self._last_progress_hook: dict[str, float] = {}
        self._planning: set[asyncio.Task] = set()

    def submit(self, key: users.ApiKey, data: dict) -> dict:
        core = self.core
        user, plan = _user_plan(core, key)
        if not plan.api:
            raise VsError(403, "FORBIDDEN", "Your plan does not include API access. Upgrade to Pro.")
        check_plan(core, user, plan, data["movie"])
        callback = data.get("callbackUrl")
        if callback is not None:
            try:
                check_target(str(callback), allow_loopback=core.settings.allow_loopback_targets)
            except TargetRefused as exc:
                raise VsError(400, "INVALID_MOVIE_JSON", f"callbackUrl: {exc}") from None
        return self.create(key.user_id, key.id, data, callback)

    def create(self, user_id: str, key_id: str | None, data: dict, callback: str | None = None) -> dict:
        """A validated movie request becomes a job in its planning phase (also used by `appliance render`)."""
        core = self.core
        core.check_disk()
        job = jobs.create_job(core.db, job_id=ids.viralsync_job_id(), dialect="viralsync", user_id=user_id,
                              key_id=key_id, kind="movie", request=data, tasks=[], webhook_url=callback,
                              phase="planning",
                              max_parallel=workers_for(core, data["renderOptions"], len(data["movie"]["scenes"])))
        self.plan_later(job["id"])
        return job

    def plan_later(self, job_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.plan(job_id))
        self._planning.add(task)
        task.add_done_callback(self._planning.discard)

    async def plan(self, job_id: str) -> None:
        """planning: fetch every source off the loop, hash scenes; dispatching: create the task DAG."""
        core = self.core
        job = jobs.get_job(core.db, job_id)
        movie = loads(job["request"])["movie"]
        try:
            local = await asyncio.to_thread(self._fetch_all, movie)
        except Exception as exc:  # noqa: BLE001 - a bad source fails the job readably
            core.scheduler.fail_job(job_id, getattr(exc, "message", None) or str(exc))
            return
        if jobs.get_job(core.db, job_id)["status"] in jobs.TERMINAL:
            return  # cancelled while planning
        jobs.update_job(core.db, job_id, phase="dispatching")
        jobs.add_tasks(core.db, job_id, self._tasks(job_id, movie, local))
        jobs.update_job(core.db, job_id, phase="rendering")
        core.scheduler.wake()

    def _fetch_all(self, movie: dict) -> dict[str, tuple[str, str]]:
        """source -> (path on disk, sha256 of its bytes)."""
        from appliance.services.pipelines import media as sources
        from renderers.movie import spec

        s = self.core.settings
        cache = s.data_dir / "media-cache"
        cache.mkdir(exist_ok=True)
        out = {}
        for scene in movie["scenes"]:
            for src in spec.scene_sources(scene):
                if src not in out:
                    path = sources.fetch_source(src, cache, s.assets_dir, max_bytes=s.media_max_mb * 2**20,
                                                timeout_s=s.media_timeout_s, allow_loopback=s.allow_loopback_targets)
                    out[src] = (str(path), sources.file_digest(path))
        return out

    def _tasks(self, job_id: str, movie: dict, local: dict) -> list[TaskDef]:
        from renderers.movie.spec import scene_cache_key, scene_sources

        w, h, fps = movie["width"], movie["height"], movie["fps"]
        tasks, links = [], []
        for n, scene in enumerate(movie["scenes"]):
            srcs = scene_sources(scene)
            names = {src: f"src_{i}{_suffix(local[src][0])}" for i, src in enumerate(srcs)}
            key = scene_cache_key(scene, w, h, fps, {src: local[src][1] for src in srcs})
            has_video = any(layer["type"] == "video" for layer in scene["layers"])
            tasks.append(TaskDef(renderer="movie.scene", name=scene["id"], cpu=1.0, mem_mb=1024 if has_video else 600,
                                 cache_key=key,
                                 input={"scene": scene, "width": w, "height": h, "fps": fps, "sources": names,
                                        "fetched": {names[s]: local[s][0] for s in srcs}}))
            links.append({"task": ids.task_id(job_id, n), "file": "scene", "as": f"scene_{n:03d}.mp4"})
        last = {"task": links[-1]["task"], "file": "thumbnail", "as": "thumb_last.jpg", "optional": True}
        tasks.append(TaskDef(renderer="movie.assemble", name="assemble", cpu=1.0, mem_mb=300,
                             depends_on=list(range(len(tasks))),
                             input={"scenes": [link["as"] for link in links], "link_inputs": [*links, last],
                                    "thumbnail": "thumb_last.jpg"}))
        return tasks

    def listener(self, job: dict, event_type: str) -> None:
        if event_type not in ("progress", "completed", "failed", "cancelled") or not job["webhook_url"]:
            return
        if event_type == "progress":
            last = self._last_progress_hook.get(job["id"], 0.0)
            if time.monotonic() - last < PROGRESS_WEBHOOK_EVERY_S:
                return
            self._last_progress_hook[job["id"]] = time.monotonic()
        name, body = event_body(self.core, job, event_type)
        enqueue(self.core.db, job_id=job["id"], dialect="viralsync", key_id=job["key_id"], url=job["webhook_url"],
                event=name, body=dumps(body).encode())
        self.core.deliverer.wake()

    def resume_planning(self) -> None:
        """After a restart: jobs still planning (no tasks yet) plan again."""
        for job in jobs.unfinished_jobs(self.core.db):
            if job["dialect"] == "viralsync" and not jobs.tasks_of(self.core.db, job["id"]):
                self.plan_later(job["id"])


def _suffix(path: str) -> str:
    import os

    return os.path.splitext(path)[1][:8]


def link_fetched(task_input: dict, ctx: dict) -> None:
    """Scheduler hook before a scene task starts: link the fetched media into its workdir."""
    import os
    import shutil

    for name, path in task_input.get("fetched", {}).items():
        try:
            os.link(path, ctx["workdir"] / name)
        except OSError:
            shutil.copy2(path, ctx["workdir"] / name)
        # the task runs as an unprivileged uid: it must be able to read (never write) its media
        os.chmod(ctx["workdir"] / name, 0o444)


# ---- routes --------------------------------------------------------------------------------------
def _vs(request: Request) -> ViralSync:
    return request.app.state.viralsync


def _job_for(core: Core, key: users.ApiKey, job_id: str) -> dict:
    job = jobs.get_user_job(core.db, job_id, key.user_id, "viralsync")
    if not job:
        raise VsError(404, "JOB_NOT_FOUND", f"Job {job_id} not found")
    return job


async def _guard(request: Request, handler) -> Response:
    vs = _vs(request)
    try:
        key = _auth(vs.core, request, vs.limiter)
        return await handler(vs, key)
    except ApplianceError as exc:
        return error_response(exc)


@post("/render/jobs", status_code=202)
async def submit_render(request: Request) -> Response:
    async def handle(vs: ViralSync, key):
        job = vs.submit(key, parse_submission(await request.body()))
        vs.core.submitted()
        return json_response({"jobId": job["id"], "status": "queued"}, 202)
    return await _guard(request, handle)


@get("/jobs")
async def list_jobs(request: Request) -> Response:
    async def handle(vs: ViralSync, key):
        q = request.query_params
        try:
            limit = int(q.get("limit", 25))
            before = tuple(base64.urlsafe_b64decode(q["cursor"]).decode().split("|", 1)) if q.get("cursor") else None
        except (ValueError, UnicodeDecodeError):
            raise VsError(400, "INVALID_REQUEST", "limit must be 1-100 and cursor must come from nextCursor") from None
        if not 1 <= limit <= 100:
            raise VsError(400, "INVALID_REQUEST", "limit must be between 1 and 100")
        if q.get("type") not in (None, "render"):
            return json_response({"jobs": [], "nextCursor": None})
        wanted = q.get("status")
        rows, out = jobs.list_jobs(vs.core.db, user_id=key.user_id, dialect="viralsync", before=before,
                                   limit=1000 if wanted else limit + 1), []
        for job in rows:
            obj = job_object(vs.core, job)
            if not wanted or obj["status"] == wanted:
                out.append((job, obj))
        page, more = out[:limit], len(out) > limit
        cursor = (base64.urlsafe_b64encode(f"{page[-1][0]['created_at']}|{page[-1][0]['id']}".encode()).decode()
                  if more and page else None)
        return json_response({"jobs": [obj for _, obj in page], "nextCursor": cursor})
    return await _guard(request, handle)


@get("/jobs/{job_id:str}")
async def get_job(request: Request, job_id: str) -> Response:
    async def handle(vs: ViralSync, key):
        return json_response(job_object(vs.core, _job_for(vs.core, key, job_id)))
    return await _guard(request, handle)


@post("/jobs/{job_id:str}/cancel", status_code=200)
async def cancel_job(request: Request, job_id: str) -> Response:
    async def handle(vs: ViralSync, key):
        job = _job_for(vs.core, key, job_id)
        if not vs.core.scheduler.cancel_job(job["id"]):
            raise VsError(409, "INVALID_STATE_TRANSITION", f"Job {job_id} is {job_object(vs.core, job)['status']} "
                                                           "and can no longer be cancelled")
        return json_response(job_object(vs.core, jobs.get_job(vs.core.db, job_id)))
    return await _guard(request, handle)


@delete("/jobs/{job_id:str}", status_code=200)
async def delete_job(request: Request, job_id: str) -> Response:
    async def handle(vs: ViralSync, key):
        job = _job_for(vs.core, key, job_id)
        if job["status"] not in jobs.TERMINAL:
            raise VsError(409, "INVALID_STATE_TRANSITION", f"Job {job_id} is still active: cancel it first")
        vs.core.store.remove_job(job_id)
        jobs.mark_deleted(vs.core.db, job_id)
        return Response(content=b"", status_code=204)
    return await _guard(request, handle)


@get("/me")
async def me(request: Request) -> Response:
    async def handle(vs: ViralSync, key):
        user, _ = _user_plan(vs.core, key)
        return json_response({"userId": user["id"], "plan": user["plan"], "email": f"{user['name']}@appliance.local"})
    return await _guard(request, handle)


@get("/usage")
async def usage(request: Request) -> Response:
    async def handle(vs: ViralSync, key):
        user, plan = _user_plan(vs.core, key)
        start, end = plans.month_bounds()
        return json_response({"plan": user["plan"], "renderMinutesUsed": plans.minutes_used(vs.core.db, user["id"], start),
                              "renderMinutesLimit": plan.minutes_per_month, "periodStart": plans._iso(start),
                              "periodEnd": plans._iso(end)})
    return await _guard(request, handle)


@get("/jobs/{job_id:str}/progress")
async def progress_stream(request: Request, job_id: str) -> Response:
    async def handle(vs: ViralSync, key):
        job = _job_for(vs.core, key, job_id)
        after = int(request.headers.get("last-event-id") or 0)
        return Stream(_sse(vs, job["id"], after), media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _guard(request, handle)


def _sse_frame(vs: ViralSync, event: dict) -> tuple[bytes, bool]:
    job = jobs.get_job(vs.core.db, event["job_id"])
    kind = event["type"] if event["type"] in ("progress", "completed", "failed", "cancelled") else "progress"
    name, body = event_body(vs.core, job, kind)
    return f"id: {event['id']}\nevent: {name}\ndata: {dumps(body)}\n\n".encode(), name != "progress"


async def _sse(vs: ViralSync, job_id: str, after: int):
    queue = vs.core.hub.subscribe(job_id)
    try:
        yield b"retry: 3000\n\n"
        for event in events.since(vs.core.db, job_id, after):
            frame, final = _sse_frame(vs, event)
            after = event["id"]
            yield frame
            if final:
                return
        if jobs.get_job(vs.core.db, job_id)["status"] in jobs.TERMINAL:
            return
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield b": keepalive\n\n"
                continue
            if event["id"] <= after:
                continue
            frame, final = _sse_frame(vs, event)
            yield frame
            if final:
                return
    finally:
        vs.core.hub.unsubscribe(job_id, queue)


router = Router(path="/v1", route_handlers=[submit_render, list_jobs, get_job, cancel_job, delete_job, me, usage,
                                            progress_stream])
