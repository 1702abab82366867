"""`appliance install` (a dedicated user, the state dir, the two hardened systemd units) and `appliance launcher`
(the privileged half that builds sandboxes; appliance/runtime/launcher.py)."""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from appliance.errors import ApplianceError

UNITS = ("appliance.service", "appliance-launcher.service")
TEMPLATES = Path(__file__).resolve().parents[2] / "systemd"
DEFAULT_SOCKET = "/run/appliance/launcher.sock"


def render_unit(name: str, *, prefix: str, state_dir: str, user: str) -> str:
    """A unit from systemd/ with the install's paths; the templates hold the /opt/appliance defaults."""
    text = (TEMPLATES / name).read_text()
    return (text.replace("/opt/appliance", prefix.rstrip("/")).replace("/var/lib/appliance", state_dir.rstrip("/"))
            .replace("User=appliance", f"User={user}").replace("Group=appliance", f"Group={user}")
            .replace("--user appliance", f"--user {user}"))


def _ensure_user(name: str, state_dir: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise ApplianceError(f"no user {name!r} and no useradd to create it: create a system user {name!r}")
    subprocess.run(["useradd", "--system", "--home-dir", state_dir, "--no-create-home", "--shell",
                    "/usr/sbin/nologin", "--user-group", name], check=True)
    return pwd.getpwnam(name)


def install(root: Path, prefix: str, state_dir: str, user: str, create_user: bool) -> list[Path]:
    """Everything `appliance install` writes, under ``root`` (``/`` on a real install, a temp dir in tests)."""
    account = _ensure_user(user, state_dir) if create_user else pwd.getpwnam(user)
    state = root / state_dir.lstrip("/")
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, account.pw_uid, account.pw_gid)
    os.chmod(state, 0o750)  # the database, outputs and first-run keys: the appliance user's, nobody else's
    units = root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        path = units / name
        path.write_text(render_unit(name, prefix=prefix, state_dir=state_dir, user=user))
        os.chmod(path, 0o644)
        written.append(path)
    return written


def cmd_install(args) -> int:
    if os.geteuid() != 0:
        raise ApplianceError("appliance install needs root (it creates a system user and writes systemd units)")
    root = Path(args.root)
    written = install(root, args.prefix, args.state_dir, args.user, create_user=not args.no_create_user)
    for path in written:
        print(f"wrote {path}")
    print(f"state dir {root / args.state_dir.lstrip('/')} (owner {args.user}, mode 0750)")
    if str(root) == "/" and shutil.which("systemctl") and not args.no_enable:
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", "--now", *UNITS], check=False)
    else:
        print("then: systemctl daemon-reload && systemctl enable --now appliance-launcher appliance")
    print(f"first-run keys: {args.state_dir.rstrip('/')}/first-run-keys.txt (root only) after the first start")
    return 0


def cmd_launcher(args) -> int:
    from appliance import settings as settings_mod
    from appliance.runtime import launcher

    try:
        account = pwd.getpwnam(args.user) if not args.user.isdigit() else pwd.getpwuid(int(args.user))
    except KeyError:
        raise ApplianceError(f"no user {args.user!r}: the launcher serves the appliance server's user") from None
    s = settings_mod.load(args.config, data_dir=args.data_dir)
    return launcher.run(Path(args.socket), account.pw_uid, s.data_dir.absolute() / "work", account.pw_gid)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("install", help="install as a service: a system user, the state dir, two hardened units")
    p.add_argument("--root", default="/", help="install under this directory instead of / (for packaging, tests)")
    p.add_argument("--prefix", default=str(TEMPLATES.parent), help="the checkout holding .venv (default: this one)")
    p.add_argument("--state-dir", default="/var/lib/appliance", help="the server's data dir (default "
                   "/var/lib/appliance)")
    p.add_argument("--user", default="appliance", help="the system user the HTTP server runs as")
    p.add_argument("--no-create-user", action="store_true", help="the user must exist already")
    p.add_argument("--no-enable", action="store_true", help="write the units, do not start them")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("launcher", parents=[common], help="the privileged sandbox launcher (runs as root)")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help=f"the Unix socket to listen on (default {DEFAULT_SOCKET})")
    p.add_argument("--user", default="appliance", help="the only user (name or uid) allowed to connect")
    p.set_defaults(func=cmd_launcher)


# ---- first-run keys: a root-only file under systemd, the terminal otherwise ------------------------------------
def first_run_keys_file(explicit: str | None, data_dir: Path) -> Path | None:
    """Where `appliance init` puts the first-run keys: ``--keys-file``; under systemd without a TTY (the journal
    would keep them) DATA_DIR/first-run-keys.txt; else None (printed, as on a TTY or with `make run`)."""
    if explicit:
        return Path(explicit)
    under_systemd = "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ
    if under_systemd and not sys.stdout.isatty():
        return data_dir / "first-run-keys.txt"
    return None


def write_first_run_keys(path: Path, lines: list[str]) -> None:
    """0600, created that way (never briefly readable); run as root (the unit's ``+``), the file is root's."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write("API keys of the user 'admin', one per dialect (created by appliance init):\n")
        f.write("\n".join(lines) + "\n")


def hand_over_db(data_dir: Path) -> None:
    """Run as root on a state dir another user owns: the database files root just opened or created go to that
    user, the one the server runs as (SQLite creates its -wal and -shm files with the opener's uid)."""
    owner = os.stat(data_dir)
    if os.geteuid() == 0 and owner.st_uid != 0:
        for db_file in data_dir.glob("appliance.db*"):
            os.chown(db_file, owner.st_uid, owner.st_gid, follow_symlinks=False)
