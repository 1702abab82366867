"""The `appliance` command. Every command takes --data-dir (default $APPLIANCE_DATA_DIR or ./var)."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

from appliance import settings as settings_mod
from appliance.cli import backup, operator
from appliance.cli.text import table
from appliance.errors import ApplianceError
from appliance.store import jobs, ledger, users
from appliance.store.db import open_db


def _settings(args) -> settings_mod.Settings:
    return settings_mod.load(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None),
                             host=getattr(args, "host", None), port=getattr(args, "port", None))


def _db(args):
    return open_db(_settings(args).db_path)


def cmd_serve(args) -> int:
    import uvicorn

    from appliance.app import create_app

    s = _settings(args)
    try:  # bound before anything is said or started: a busy port is named with its fix, not after "serving"
        sock = _bind(s.host, s.port)
    except OSError as exc:
        print(f"error: cannot listen on {s.host}:{s.port}: {exc.strerror}. Another program (or appliance) uses "
              f"that port: stop it, or pick another with --port N or APPLIANCE_PORT=N", file=sys.stderr)
        return 3
    app = create_app(s)
    print(f"appliance serving on {s.base_url} (data dir {s.data_dir.resolve()}); health: {s.base_url}/healthz",
          flush=True)
    # A progress stream that follows a job stays open until the job ends, and uvicorn waits for open responses
    # before it stops the scheduler: give them 5 s, then close them (clients resume with Last-Event-ID).
    config = uvicorn.Config(app, host=s.host, port=s.port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5)
    hub = app.state.core.hub

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # SIGTERM, SIGINT: a graceful stop
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            loop = asyncio._get_running_loop()  # the signal arrives on the loop's thread, between callbacks
            if loop is not None:  # open progress streams end at once instead of being cut after 5 s
                loop.call_soon_threadsafe(hub.close)

    server = Server(config)
    # uvicorn re-raises the signal it caught once it has stopped: to this handler, not the default (exit -15)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run(sockets=[sock])
    print("appliance stopped: running renders are re-queued for the next start", flush=True)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it every
    # response waited ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def cmd_init(args) -> int:
    """First run only: create the admin user, grant starter credits, print one key per dialect."""
    from appliance.cli import install  # under systemd the keys go to a root-only file, never the journal

    s, db = _settings(args), _db(args)
    install.hand_over_db(s.data_dir)  # run as root by the unit: the database stays the server user's
    if users.list_users(db):
        return 0
    admin = users.create_user(db, "admin", plan="studio")
    ledger.grant(db, admin["id"], s.initial_free_credits, bucket="free", note="first run")
    keys = [f"  {dialect:<10} {users.create_key(db, admin['id'], dialect, name='first-run')[0]}"
            for dialect in users.DIALECTS]
    keys_file = install.first_run_keys_file(args.keys_file, s.data_dir)
    if keys_file is not None:
        install.write_first_run_keys(keys_file, keys)
        print(f"Created user 'admin'. Its API keys are in {keys_file} (mode 0600; shown nowhere else)")
    else:
        print("Created user 'admin'. Its API keys (shown once; store them now):", *keys, sep="\n")
    print(f"Dashboard: {s.base_url}/ — {operator.hint()}")
    return 0


def cmd_users_create(args) -> int:
    db = _db(args)
    if args.credits < 0:
        raise ApplianceError("--credits must be 0 or more")
    user = users.create_user(db, args.name, plan=args.plan)
    if args.credits:
        ledger.grant(db, user["id"], args.credits, bucket="paid", note="users create")
    print(user["id"])
    return 0


def cmd_users_list(args) -> int:
    db = _db(args)
    rows = []
    disk = jobs.disk_by_user(db)
    for user in users.list_users(db):
        bal = ledger.balance(db, user["id"])
        credits = f"{bal['total']} (free {bal['free']}, paid {bal['paid']})"
        on_disk = f"{disk.get(user['id'], 0) / 1e6:.1f} MB"  # the outputs of their completed jobs
        rows.append((user["name"], user["id"], user["plan"], credits, on_disk))
    _print(table(("NAME", "ID", "PLAN", "CREDITS", "DISK"), rows))  # a header over the rows; none: nothing
    return 0


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line)


def cmd_users_plan(args) -> int:
    users.set_plan(_db(args), args.name, args.plan)
    return 0


def cmd_credits_grant(args) -> int:
    db = _db(args)
    user = users.require_user(db, args.user)
    ledger.grant(db, user["id"], args.amount, bucket=args.bucket, note="credits grant")
    print(json.dumps(ledger.balance(db, user["id"])))
    return 0


def cmd_keys_create(args) -> int:
    from appliance.delivery import netpolicy

    s, db = _settings(args), _db(args)
    user = users.require_user(db, args.user)
    if args.webhook_url is not None:  # refused now, or every later render of the key would be refused
        try:  # the API's own rule: Kodisc webhooks are https:// unless allow_http_webhooks
            netpolicy.parse(args.webhook_url, allow_http=s.allow_http_webhooks or args.dialect != "kodisc",
                            allow_loopback=s.allow_loopback_targets)
        except netpolicy.RefusedURL as exc:
            raise ApplianceError(f"--webhook-url refused: {exc}") from None
    key, row = users.create_key(db, user["id"], args.dialect, scope=args.scope, name=args.name or "",
                                webhook_url=args.webhook_url)
    if args.json:
        print(json.dumps({"key": key, "keyId": row["id"], "webhookSecret": row["webhook_secret"]}))
    else:
        print(key)
    return 0


def cmd_keys_list(args) -> int:
    db = _db(args)
    user_id = users.require_user(db, args.user)["id"] if args.user else None
    _print(table(("ID", "DIALECT", "PREFIX", "SCOPE", "NAME", "STATE"),
                 [(k["id"], k["dialect"], k["prefix"] + "…", k["scope"], k["name"] or "-",
                   f"revoked {k['revoked_at']}" if k["revoked_at"] else "live") for k in users.list_keys(db, user_id)]))
    return 0


def cmd_keys_revoke(args) -> int:
    users.revoke_key(_db(args), args.key_id)
    return 0


def cmd_jobs_list(args) -> int:
    rows = jobs.list_jobs(_db(args), status=args.status, limit=args.limit)
    # columns as wide as their content: RenderCAD ids (UUIDs, render_…) are longer than the other dialects'
    _print(table(("ID", "DIALECT", "KIND", "STATUS", "DONE", "CREATED", "ERROR"),
                 [(j["id"], j["dialect"], j["kind"], j["status"], f"{j['progress'] or 0:.0%}", j["created_at"],
                   j["error"] or "") for j in rows], right=("DONE",)))
    return 0


def cmd_jobs_show(args) -> int:
    from appliance.api.admin import public_job

    db = _db(args)
    job = jobs.get_job(db, args.job_id)
    if not job:
        raise ApplianceError(f"no job {args.job_id}")
    print(json.dumps(public_job(job, jobs.tasks_of(db, job["id"])), indent=2))
    return 0


def cmd_jobs_cancel(args) -> int:
    from appliance.cli.client import AdminClient

    print(json.dumps(AdminClient(_settings(args)).cancel(args.job_id), indent=2))
    return 0


def cmd_doctor(args) -> int:
    if args.attack:  # the hostile scenes, against the appliance serving --data-dir
        from appliance.cli import attack

        return attack.run(_settings(args))
    from appliance.cli.doctor import run_checks

    return run_checks(_settings(args))


def cmd_render(args) -> int:
    from appliance.cli.client import AdminClient

    return AdminClient(_settings(args)).render_file(Path(args.file), user=args.user, class_name=args.class_name,
                                                    quality=args.quality, estimate=args.estimate)


def cmd_device_approve(args) -> int:
    """Approve a RenderCAD device code for a user, as the verification page does for a signed-in person."""
    from appliance.api.rendercad.auth import approve

    db = _db(args)
    approve(db, args.code, users.require_user(db, args.user)["id"])
    print(f"approved {args.code.strip().upper()} for {args.user}; the app receives its token on its next poll")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="data directory (default $APPLIANCE_DATA_DIR or ./var)")
    common.add_argument("--config", default=None, help="TOML config file (default config/appliance.toml)")
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--host", help="the running server's address (default: config/APPLIANCE_HOST)")
    server.add_argument("--port", type=int, help="the running server's port (default: config/APPLIANCE_PORT)")
    parser = argparse.ArgumentParser(prog="appliance", description="Self-hosted render appliance")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the server in the foreground (SIGTERM stops it)")
    p.add_argument("--host", help="the address to listen on (default: config/APPLIANCE_HOST, 127.0.0.1; 0.0.0.0 "
                   "for the LAN)")
    p.add_argument("--port", type=int, help="the port to listen on (default: config/APPLIANCE_PORT, 8000)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("init", parents=[common], help="first run: create admin and its keys")
    p.add_argument("--keys-file", help="write the first-run keys to this file (0600) instead of printing them; "
                   "the default under systemd without a TTY: DATA_DIR/first-run-keys.txt")
    p.set_defaults(func=cmd_init)

    u = sub.add_parser("users", help="manage users").add_subparsers(dest="sub", required=True)
    p = u.add_parser("create", parents=[common], help="add a user; prints its id")
    p.add_argument("name", help="the user's name (letters, digits, '_', '.', '@', '-')")
    p.add_argument("--plan", default="studio", choices=users.PLANS, help="its ViralSync plan (default studio)")
    p.add_argument("--credits", type=int, default=0, help="paid credits to grant")
    p.set_defaults(func=cmd_users_create)
    u.add_parser("list", parents=[common], help="list users with plans and balances").set_defaults(
        func=cmd_users_list)
    p = u.add_parser("plan", parents=[common], help="set a user's plan")
    p.add_argument("name", help="the user"), p.add_argument("plan", choices=users.PLANS, help="the new plan")
    p.set_defaults(func=cmd_users_plan)

    c = sub.add_parser("credits", help="credit ledger").add_subparsers(dest="sub", required=True)
    p = c.add_parser("grant", parents=[common], help="add credits to a user; prints the balance as JSON")
    p.add_argument("--user", required=True, help="the user's name")
    p.add_argument("amount", type=int, help="how many credits (a positive whole number)")
    p.add_argument("--bucket", default="paid", choices=ledger.BUCKETS, help="paid (default) or free: free credits "
                   "are spent first")
    p.set_defaults(func=cmd_credits_grant)

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="sub", required=True)
    p = k.add_parser("create", parents=[common], help="create a key; prints it (shown once, never again)")
    p.add_argument("--user", required=True, help="the key's owner")
    p.add_argument("--dialect", required=True, choices=users.DIALECTS, help="the API the key opens")
    p.add_argument("--scope", default="full-access", choices=users.SCOPES, help="what the key may do "
                   "(default full-access)")
    p.add_argument("--name", help="a label shown in keys list and the dashboard")
    p.add_argument("--webhook-url", help="the key's default webhook URL (Kodisc: https unless allow_http_webhooks)")
    p.add_argument("--json", action="store_true", help="print {key, keyId, webhookSecret} instead of the key alone")
    p.set_defaults(func=cmd_keys_create)
    p = k.add_parser("list", parents=[common], help="list keys (prefixes only, never a whole key)")
    p.add_argument("--user", help="only this user's keys")
    p.set_defaults(func=cmd_keys_list)
    p = k.add_parser("revoke", parents=[common], help="revoke a key at once")
    p.add_argument("key_id", help="the key's id (key_…, from keys list)")
    p.set_defaults(func=cmd_keys_revoke)

    j = sub.add_parser("jobs", help="inspect and cancel jobs").add_subparsers(dest="sub", required=True)
    p = j.add_parser("list", parents=[common], help="every user's jobs, newest first")
    p.add_argument("--status", help="only jobs in this state: queued, running, completed, failed or cancelled")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(func=cmd_jobs_list)
    p = j.add_parser("show", parents=[common], help="one job and its tasks, as JSON")
    p.add_argument("job_id", help="the job's id (any dialect)")
    p.set_defaults(func=cmd_jobs_show)
    p = j.add_parser("cancel", parents=[common, server], help="ask the running server to cancel a job")
    p.add_argument("job_id", help="the job's id (any dialect)")
    p.set_defaults(func=cmd_jobs_cancel)

    d = sub.add_parser("device", help="RenderCAD device-code sign-in").add_subparsers(dest="sub", required=True)
    p = d.add_parser("approve", parents=[common], help="approve an app's device code for a user")
    p.add_argument("code", help="the six-letter code the app shows")
    p.add_argument("--user", required=True, help="the user the app signs in as")
    p.set_defaults(func=cmd_device_approve)

    p = sub.add_parser("doctor", parents=[common, server], help="check dependencies and capacity")
    p.add_argument("--attack", action="store_true", help="submit hostile scenes to the appliance serving "
                   "--data-dir and print contained / ESCAPED for each (exit 1 on any escape); run it after "
                   "every kernel or distribution upgrade")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("render", parents=[common, server],
                       help="submit a scene (.py) or Movie JSON (.json) to the running server and follow it")
    p.add_argument("file", help="a Manim scene file (.py) or a Movie JSON document (.json)")
    p.add_argument("--user", default="admin", help="the job's owner (default admin)")
    p.add_argument("--scene", "--class-name", dest="class_name", help="the scene class, when the file holds several")
    p.add_argument("--quality", default="medium", choices=("low", "medium", "high", "twok", "fourk"),
                   help="Kodisc's presets: low 854x480@15 … fourk 3840x2160@30 (default medium, 1280x720@30)")
    p.add_argument("--estimate", action="store_true", help="print how long it would take (and its credits), "
                   "learnt from this box's finished jobs, and render nothing")
    p.set_defaults(func=cmd_render)
    backup.add_commands(sub, common)
    from appliance.cli import models  # appliance models add | list | remove: the studio's own ONNX models

    models.add_commands(sub, common, server)
    from appliance.cli import install  # the service: appliance install, appliance launcher

    install.add_commands(sub, common)
    operator.add_commands(sub, common)  # the dashboard's operator accounts
    from appliance.cli import cluster, worker  # appliance worker, scheduler, cluster: executor = "dask"

    worker.add_commands(sub, common)
    cluster.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ApplianceError, settings_mod.SettingsError) as exc:
        print(f"appliance: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
