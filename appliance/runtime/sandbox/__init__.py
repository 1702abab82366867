"""The sandbox a task runs in (ARCHITECTURE.md, "Sandbox"). Stdlib only: the zygote imports this package and
must stay free of the server's modules.

A task is three processes, all forked from the zygote (executors/zygote.py):
- the worker: a host process (its pid is what the server kills by process group and what the per-task uid
  comes from). As root it creates the task's cgroup (cgroups.py) and builds the new root in fresh mount, PID,
  net, ipc and uts namespaces (namespaces.py); then it drops to the task uid, becomes non-dumpable and stays
  outside the task's PID namespace. It alone holds the server's pipe: it forwards well-formed progress and log
  lines from the task, copies the task's output into the log up to a cap, watches the workdir's growth
  (quota.py) and the cgroup's OOM counter, and passes on the task's result and exit status.
- the task's init: pid 1 of the new PID namespace; mounts /proc, reaps, reports the renderer's exit status.
  When it exits the kernel kills whatever is left in the namespace.
- the renderer: rlimits, per-task uid, no capabilities, no_new_privs, a seccomp filter (seccomp.py); it runs
  the untrusted code and reaches the worker only through its own pipes.

The worker is forked ahead of its task (zygote.Spare): it takes its own session and joins its cgroup while it
waits, and gets the task's limits when the request arrives, before any of the task's code runs. When the
worker has been reaped, the zygote kills whatever still runs as the task uid (``kill_uid``) through a small
helper it forked before preloading (zygote.UidKiller): a fork of the preloaded zygote per task end cost about
14 ms.

Fallback (not root, or namespaces refused): rlimits and seccomp only, and the mechanism string says so; the
zygote refuses such tasks unless ``allow_unsandboxed`` (probe.untrusted_allowed).
"""
from __future__ import annotations

from appliance.runtime.sandbox.cgroups import Cgroups
from appliance.runtime.sandbox.kernel import (
                                              set_child_subreaper,
                                              set_dumpable,
                                              set_oom_score_adj,
                                              set_parent_death_signal,
)
from appliance.runtime.sandbox.limits import (
                                              UID_BASE,
                                              Limits,
                                              apply_limits,
                                              drop_privileges,
                                              kill_uid,
                                              preloaded_mb,
                                              task_environment,
                                              task_uid,
)
from appliance.runtime.sandbox.namespaces import enter, mount_proc, readonly_sources
from appliance.runtime.sandbox.probe import (
                                              DISABLED,
                                              FULL,
                                              NOT_ROOT,
                                              layers,
                                              layers_here,
                                              probe,
                                              probe_here,
                                              untrusted_allowed,
)

__all__ = ["Cgroups", "DISABLED", "FULL", "Limits", "NOT_ROOT", "UID_BASE", "apply_limits", "drop_privileges",
           "enter", "kill_uid", "layers", "layers_here", "mount_proc", "preloaded_mb", "probe", "probe_here",
           "readonly_sources", "set_child_subreaper", "set_dumpable", "set_oom_score_adj",
           "set_parent_death_signal", "task_environment", "task_uid", "untrusted_allowed"]
