"""The job and task rows as store/jobs.py reads them: the seam between the store and the scheduler, the services
and the dialect adapters. Column for column what ``select *`` returns (migrations.py is the schema); JSON columns
(request, payload, metadata, result, input, depends_on) stay text here, read with ``db.loads`` by whoever needs
them. Stdlib only, so a pure module (runtime/admission.py) can name a task without importing the database."""
from __future__ import annotations

from typing import NotRequired, TypedDict


class JobRow(TypedDict):
    id: str
    dialect: str  # kodisc | viralsync | rendercad | admin
    user_id: str
    key_id: str | None
    kind: str
    status: str  # uploading | queued | running | completed | failed | cancelled (store/jobs.py)
    phase: str
    progress: float
    priority: int
    max_parallel: int | None
    request: str  # JSON
    payload: str | None  # JSON; None while the job collects its inputs
    metadata: str | None  # JSON
    result: str | None  # JSON, once completed
    error: str | None
    webhook_url: str | None
    credit_rate: float | None
    charge: int | None
    duration_ms: int | None
    output_bytes: int | None
    created_at: str
    started_at: str | None
    updated_at: str
    completed_at: str | None
    deleted_at: str | None
    expired_at: str | None


class TaskState(TypedDict):
    """What a listing shows of a task (no input: a scene's input is its whole JSON)."""
    id: str
    job_id: str
    idx: int
    name: str
    renderer: str
    status: str  # queued | running | done | failed | cancelled
    progress: float
    error: str | None
    cached: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class TaskRow(TaskState):
    input: str  # JSON
    depends_on: str  # JSON list of task ids
    cpu: float
    mem_mb: int
    gpu: int
    attempts: int
    pid: int | None
    log_path: str | None
    result: str | None  # JSON, once done
    cache_key: str | None


class TaskWork(TypedDict):
    """A task as its job's progress and its CPU weight see it: ``work`` is its input's ``_work`` (jobs.WORK_KEY),
    read in SQL (the input itself, a scene's whole JSON, is never parsed for it); None when it has none."""
    id: str
    renderer: str
    status: str
    progress: float
    depends_on: str  # JSON list of task ids
    work: object  # a number where the pipeline gave one


class ReadyTask(TaskRow):
    """A task whose dependencies are done, with what admission needs of its job."""
    user_id: str
    priority: int
    max_parallel: int | None
    job_created_at: str


# A task's input named from a dependency's result (the task input's ``link_inputs``; the scheduler resolves it
# when the dependency is done): that task's output of role ``file``, under the name ``as`` in the workdir; an
# ``optional`` link whose role the dependency did not produce is skipped. "as" is a keyword: the call syntax.
Link = TypedDict("Link", {"task": str, "file": str, "as": str, "optional": NotRequired[bool]})
