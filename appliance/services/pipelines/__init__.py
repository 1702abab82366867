"""Pipelines turn a validated request into a task DAG. They know nothing of HTTP or of any dialect's shapes.

A pipeline has ``plan(payload) -> list[TaskDef]`` and ``deferred``: an immediate pipeline (Manim, explicit
tasks) plans at submit, in the same transaction that creates the job; a deferred one (Movie: its media must be
fetched first) is planned by the jobs service in a worker thread after the job exists, in phase ``planning``.
"""
from __future__ import annotations

from typing import Any, Protocol

from appliance.store.jobs import TaskDef


class Pipeline(Protocol):
    deferred: bool  # planned after the job exists (in a worker thread), not at submit

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]: ...
