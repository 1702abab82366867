"""The CLI's client for a running server's local admin API."""
from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import httpx

from appliance.api.admin import token_path
from appliance.errors import ApplianceError
from appliance.settings import Settings


class AdminClient:
    def __init__(self, settings: Settings) -> None:
        self.base = f"http://{settings.host}:{settings.port}/admin"
        token = token_path(settings.data_dir)
        if not token.is_file():
            raise ApplianceError(f"no admin token in {settings.data_dir}: is a server running with this --data-dir? "
                                 "(start one with `make run` or `appliance serve`)")
        self.headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        self.settings = settings

    def _call(self, method: str, path: str, **kw) -> dict:
        try:
            response = httpx.request(method, self.base + path, headers=self.headers, timeout=30, **kw)
        except httpx.ConnectError:
            raise ApplianceError(f"no server at {self.base} — start it with `make run` or `appliance serve`") from None
        if response.status_code >= 400:
            raise ApplianceError(response.json().get("message") or response.text)
        return response.json()

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def render_file(self, path: Path, *, user: str, class_name: str | None) -> int:
        if not path.is_file():
            raise ApplianceError(f"no such file: {path}")
        if path.suffix == ".json":
            return self.render_movie(path, user=user)
        if path.suffix != ".py":
            raise ApplianceError("appliance render takes a Manim scene (.py) or a Movie JSON document (.json)")
        code = path.read_text()
        class_name = class_name or _first_scene_class(code)
        task_input = {"code": code, "className": class_name, "width": 1280, "height": 720, "fps": 30}
        job = self._call("POST", "/jobs", json={"user": user, "renderer": "manim", "input": task_input})
        return self.follow(job["id"])

    def render_movie(self, path: Path, *, user: str) -> int:
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise ApplianceError(f"{path} is not valid JSON: {exc}") from None
        body = {k: v for k, v in doc.items() if k in ("movie", "renderOptions")} if "movie" in doc else {"movie": doc}
        job = self._call("POST", "/jobs", json={"user": user, **body})
        return self.follow(job["id"])

    def follow(self, job_id: str) -> int:
        while True:
            job = self._call("GET", f"/jobs/{job_id}")
            bar = "#" * int(job["progress"] * 30)
            progress = min(1.0, max(0.0, float(job["progress"] or 0.0)))
            bar = "#" * int(progress * 30)
            print(f"\r{job_id} [{bar:<30}] {progress:4.0%} {job['status']:<10}", end="", file=sys.stderr)
            if job["status"] in ("completed", "failed", "cancelled"):
                print(file=sys.stderr)
                break
            time.sleep(0.5)
        if job["status"] != "completed":
            print(f"{job['status']}: {job['error']}", file=sys.stderr)
            return 1
        out = self.settings.data_dir / "outputs" / job_id
        for name in (job["result"] or {}).get("files", {}).values():
            print(out / name)
        return 0


def _first_scene_class(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ApplianceError(f"the scene file does not parse: {exc}") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            return node.name
    raise ApplianceError("no class in the scene file; pass --class-name")
