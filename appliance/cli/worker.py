"""``appliance worker --scheduler ADDR``: this machine joins a Dask cluster and renders the appliance's tasks.

It becomes ``dask worker ADDR --preload appliance.runtime.executors.dask_worker`` (exec'd: signals and exit
status are the worker's own) with the resources the appliance asks for — ``CPU`` (physical cores or
cpu_slots), ``MEM`` (MB: memory_mb, or total memory minus memory_reserve_mb), ``GPU`` (compute slots over this
machine's GPUs) and ``NVENC`` (probed encoder sessions) when there are any — measured here unless
``--resources`` says otherwise. The GPUs measured are handed to the worker (``$APPLIANCE_WORKER_GPUS``), which
tells the appliance, so the probe runs once. Tasks run in this machine's sandbox, with this machine's config
(``--config``; ``launcher_socket`` for a worker that runs unprivileged); the worker never sees the appliance's
database.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance import settings as settings_mod
from appliance.cli import cluster

PRELOAD = "appliance.runtime.executors.dask_worker"


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("worker", parents=[common], help="join a Dask cluster as a worker that renders the "
                       "appliance's tasks (executor = \"dask\")")
    p.add_argument("--scheduler", required=True, help="the Dask scheduler, e.g. tcp://10.0.0.5:8786 or tls://…")
    p.add_argument("--resources", help='what this worker offers, e.g. "CPU=8,MEM=30000,GPU=1,NVENC=2" '
                   "(default: measured here)")
    p.add_argument("--nthreads", type=int, help="tasks this worker may run at once (default: its CPU resource)")
    p.add_argument("--name", help="the worker's name in the cluster (default: its address)")
    p.add_argument("--worker-dir", help="where task workdirs, logs and staged artifacts live "
                   "(default: inside the Dask worker's local directory)")
    p.add_argument("--host", help="the address other machines reach this worker at (default: Dask's choice)")
    p.add_argument("--no-nanny", action="store_true", help="no nanny process (it restarts a worker that died)")
    p.add_argument("--tls-dir", help="mutual TLS with the key pair NAME.pem/NAME.key and ca.pem of this folder "
                   "(made by `appliance cluster init`; NAME: --tls-name); the scheduler address is then tls://…")
    p.add_argument("--tls-name", default="worker", help="the key pair's name in --tls-dir (default: worker)")
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        p.add_argument(flag, help="PEM file for TLS to the scheduler (or set it in Dask's configuration)")
    p.set_defaults(func=cmd_worker)


def measured_resources(s: settings_mod.Settings) -> tuple[dict[str, float], list[dict]]:
    """(what the worker offers, its GPUs as measured)."""
    from appliance.runtime.resources import measure

    capacity = measure(s)
    offered: dict[str, float] = {"CPU": capacity.cpu, "MEM": capacity.mem_mb}
    if capacity.gpu_slots:
        offered["GPU"] = capacity.gpu_slots
    if capacity.nvenc:
        offered["NVENC"] = capacity.nvenc
    return offered, [g.as_json() for g in capacity.gpus]


def parse_resources(text: str) -> dict[str, float]:
    offered = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        try:
            offered[name.strip()] = float(amount)
        except ValueError:
            raise SystemExit(f"appliance worker: bad --resources entry {part!r} (want NAME=NUMBER)") from None
        if not sep or not name.strip():
            raise SystemExit(f"appliance worker: bad --resources entry {part!r} (want NAME=NUMBER)")
    return offered


def worker_argv(args: argparse.Namespace, offered: dict[str, float]) -> list[str]:
    threads = args.nthreads or max(1, int(offered.get("CPU", 1)))
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", args.scheduler, "--preload", PRELOAD,
            "--resources", ",".join(f"{k}={v:g}" for k, v in offered.items()), "--nthreads", str(threads),
            "--no-dashboard"]
    host = args.host or (_LOOPBACK if _on_loopback(args.scheduler) else None)  # loopback stays loopback
    ca, cert, key = cluster.tls_files(args.tls_dir, args.tls_name) if getattr(args, "tls_dir", None) else (
        args.tls_ca_file, args.tls_cert, args.tls_key)
    for flag, value in (("--name", args.name), ("--host", host), ("--tls-ca-file", ca),
                        ("--tls-cert", cert), ("--tls-key", key)):
        if value:
            argv += [flag, value]
    if args.no_nanny:
        argv.append("--no-nanny")
    return argv


_LOOPBACK = "127.0.0.1"


def _on_loopback(address: str) -> bool:
    """A scheduler on loopback: the worker listens there too (a worker's port runs code: never open it by
    accident to the network)."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def cmd_worker(args: argparse.Namespace) -> int:
    from appliance.runtime.executors.dask_worker import GPUS_ENV

    s = settings_mod.load(args.config)
    env = dict(os.environ)
    if args.resources:
        offered = parse_resources(args.resources)  # the worker measures its GPUs if the appliance asks
    else:
        offered, gpus = measured_resources(s)
        env[GPUS_ENV] = json.dumps(gpus)
        for gpu in gpus:
            print(f"appliance worker: GPU {gpu['index']} {gpu['name']}: {gpu['computeSlots']} compute slot(s), "
                  f"NVENC {gpu['nvencSessions']} ({gpu['nvencReason']})", flush=True)
    if "CPU" not in offered or "MEM" not in offered:
        raise SystemExit("appliance worker: --resources must offer CPU and MEM (every task asks for both)")
    if args.config:
        env["APPLIANCE_WORKER_CONFIG"] = str(Path(args.config).resolve())
    if args.worker_dir:
        env["APPLIANCE_WORKER_DIR"] = str(Path(args.worker_dir).resolve())
    argv = worker_argv(args, offered)
    if args.tls_dir:  # and it refuses plain connections (to its own port too)
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    print(f"appliance worker: {' '.join(argv[1:])}", flush=True)
    os.execve(sys.executable, argv, env)
    return 0  # not reached
