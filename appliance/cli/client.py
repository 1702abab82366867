"""The CLI's client for a running server's local admin API."""
from __future__ import annotations

import ast
import hmac
import json
import secrets
import sys
import time
from pathlib import Path
from typing import TextIO

import httpx

from appliance.api.admin import proof_of, token_path
from appliance.api.kodisc import QUALITIES
from appliance.errors import ApplianceError
from appliance.settings import Settings


class AdminClient:
    def __init__(self, settings: Settings) -> None:
        self.base = f"http://{settings.host}:{settings.port}/admin"
        token = token_path(settings.data_dir)
        if not token.is_file():
            raise ApplianceError(f"no admin token in {settings.data_dir}: is a server running with this --data-dir? "
                                 "(start one with `make run` or `appliance serve`)")
        self._token = token.read_text().strip()
        self.headers = {"Authorization": f"Bearer {self._token}"}
        self.settings = settings
        self._proven = False

    def _call(self, method: str, path: str, **kw) -> dict:
        if not self._proven:
            self._prove()
        response = self._request(method, path, headers=self.headers, **kw)
        if response.status_code >= 400:
            raise ApplianceError(self._json(response).get("message") or response.text[:500])
        return self._json(response)

    def _prove(self) -> None:
        """The token goes only to the server that holds this data dir: it must answer a fresh nonce with the
        HMAC only the token's holder can compute (another program on the port gets nothing)."""
        nonce = secrets.token_hex(16)
        response = self._request("GET", "/proof", params={"nonce": nonce})
        got = self._json(response).get("proof") if response.status_code == 200 else None
        if not isinstance(got, str) or not hmac.compare_digest(got, proof_of(self._token, nonce)):
            raise ApplianceError(f"what answers at {self.base} is not the appliance serving {self.settings.data_dir}"
                                 " (its admin token was not sent): check --port / APPLIANCE_PORT and --data-dir")
        self._proven = True

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return httpx.request(method, self.base + path, timeout=30, **kw)
        except httpx.ConnectError:
            raise ApplianceError(f"no server at {self.base} — start it with `make run` or `appliance serve`") from None
        except httpx.HTTPError as exc:
            raise ApplianceError(f"no answer from {self.base}: {type(exc).__name__}") from None

    def _json(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApplianceError(f"{self.base} answered HTTP {response.status_code} with no JSON: is it the "
                                 "appliance? (check --port / APPLIANCE_PORT)")
        return body

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def render_file(self, path: Path, *, user: str, class_name: str | None, quality: str = "medium",
                    estimate: bool = False) -> int:
        """Render a scene or a movie and follow it; with ``estimate``, print the quote and render nothing."""
        body = self.render_body(path, user=user, class_name=class_name, quality=quality)
        if estimate:
            return self.print_quote(self._call("POST", "/estimate", json=body))
        job = self._call("POST", "/jobs", json=body)
        return self.follow(job["id"])

    def render_body(self, path: Path, *, user: str, class_name: str | None, quality: str = "medium") -> dict:
        if not path.is_file():
            raise ApplianceError(f"no such file: {path}")
        if path.suffix == ".json":
            try:
                doc = json.loads(path.read_text())
            except ValueError as exc:
                raise ApplianceError(f"{path} is not valid JSON: {exc}") from None
            body = {k: v for k, v in doc.items() if k in ("movie", "renderOptions")} if "movie" in doc \
                else {"movie": doc}
            return {"user": user, **body}
        if path.suffix != ".py":
            raise ApplianceError("appliance render takes a Manim scene (.py) or a Movie JSON document (.json)")
        code = path.read_text()
        class_name = pick_scene(path.name, code, class_name)
        width, height, fps = QUALITIES[quality]
        task_input = {"code": code, "className": class_name, "width": width, "height": height, "fps": fps}
        return {"user": user, "scene": task_input}  # the manim pipeline: cache, pieces of earlier renders, split

    @staticmethod
    def print_quote(quote: dict) -> int:
        """The estimate on stdout: seconds and credits, or why there is none yet."""
        if quote.get("seconds") is None:
            print(f"no estimate yet: {quote.get('reason')}")
            return 0
        credits = "" if quote.get("credits") is None else f", {quote['credits']} credits"
        print(f"about {quote['seconds']:.1f} s of rendering{credits} (from {quote['basis']} finished "
              f"{quote['family']} jobs on this box)")
        return 0

    def follow(self, job_id: str) -> int:
        """Wait for the job, a progress line on stderr meanwhile (on a terminal); then its outputs."""
        progress = Progress(job_id)
        while True:
            job = self._call("GET", f"/jobs/{job_id}")
            done = job["status"] in ("completed", "failed", "cancelled")
            eta = job.get("eta") or {}
            left = f", about {eta['secondsLeft']:.0f} s left" if eta.get("secondsLeft") is not None else ""
            progress.show(float(job["progress"] or 0.0), job["status"] + left, final=done)
            if done:
                break
            time.sleep(0.5)
        if job["status"] != "completed":
            print(f"{job['status']}: {job['error']}", file=sys.stderr)
            return 1
        reuse = job.get("reuse")
        if reuse:  # pieces of earlier renders of the scene it copied instead of drawing them again
            print(f"reused {reuse['reusedPieces']} of {reuse['pieces']} pieces of earlier renders, about "
                  f"{reuse['secondsSaved']:.1f} s saved", file=sys.stderr)
        # stdout: the local paths, one a line, for scripts on this machine (as before); stderr: the URLs a person
        # opens or shares on the LAN (public_url when set).
        out, base = self.settings.data_dir / "outputs" / job_id, self.settings.base_url
        for name in (job["result"] or {}).get("files", {}).values():
            print(out / name)
            print(f"  {base}/r/{job_id}/{name}", file=sys.stderr)
        return 0


class Progress:
    """One percentage line on stderr, rewritten in place on a terminal; elsewhere (a log, a pipe) only the final
    state, so logs do not fill with carriage returns."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.tty = self.stream.isatty()

    def show(self, fraction: float, status: str = "", *, final: bool = False) -> None:
        fraction = min(1.0, max(0.0, fraction))
        line = f"{self.label} {fraction:4.0%} {status}".rstrip()
        if self.tty:
            print(f"\r{line:<60}", end="\n" if final else "", file=self.stream, flush=True)
        elif final:
            print(line, file=self.stream, flush=True)


def scene_classes(code: str) -> list[str]:
    """The classes of a scene file that look like scenes (a base named *Scene); all classes if none does."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ApplianceError(f"the scene file does not parse: {exc}") from None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    scenes = [c.name for c in classes if any(ast.unparse(b).split(".")[-1].endswith("Scene") for b in c.bases)]
    return scenes or [c.name for c in classes]


def pick_scene(filename: str, code: str, wanted: str | None) -> str:
    found = scene_classes(code)
    if wanted:
        if wanted not in found and wanted not in _all_classes(code):
            raise ApplianceError(f"{filename} has no scene {wanted!r}; its scenes: {', '.join(found) or 'none'}")
        return wanted
    if len(found) == 1:
        return found[0]
    if not found:
        raise ApplianceError(f"no scene class in {filename}")
    raise ApplianceError(f"{filename} holds {len(found)} scenes: {', '.join(found)}; pick one with --scene NAME")


def _all_classes(code: str) -> list[str]:
    return [node.name for node in ast.parse(code).body if isinstance(node, ast.ClassDef)]
