"""`appliance operator add|passwd|remove|list`: the dashboard's operator accounts (not API users).

The password is read from the terminal (asked twice, never echoed; a password that is too short or a second
entry that differs is asked for again, up to three tries) or, when stdin is not a terminal, as the first line of
stdin (`printf '%s\\n' "$PW" | appliance operator add alice`), so it never appears in argv or the shell's history.
"""
from __future__ import annotations

import getpass
import sys

from appliance.cli.text import command, table
from appliance.errors import ApplianceError
from appliance.store import operators
from appliance.store.db import open_db

TRIES = 3


def hint() -> str:
    """The first-run hint, naming the command as it runs here (`.venv/bin/appliance` when it is not on PATH)."""
    return f"create a dashboard operator with: {command()} operator add NAME (it asks for a password)"


def _db(args):
    from appliance.cli import _settings

    return open_db(_settings(args).db_path)


def read_password() -> str:
    """One line of stdin; on a terminal, asked twice and asked again (up to TRIES times) when it is too short or
    the two entries differ."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    problem = ""
    for attempt in range(1, TRIES + 1):
        first = getpass.getpass(f"Password (at least {operators.MIN_PASSWORD} characters): ")
        if len(first) < operators.MIN_PASSWORD:
            problem = f"the password must have at least {operators.MIN_PASSWORD} characters"
        elif getpass.getpass("Again: ") != first:
            problem = "the two passwords differ"
        else:
            return first
        if attempt < TRIES:
            print(f"{problem}; try again ({TRIES - attempt} {'tries' if TRIES - attempt > 1 else 'try'} left)",
                  file=sys.stderr)
    raise ApplianceError(f"{problem} ({TRIES} tries)")


def cmd_add(args) -> int:
    db = _db(args)
    operators.add_operator(db, args.name, read_password())
    print(f"operator {args.name} added; sign in at the appliance's / in a browser")
    return 0


def cmd_passwd(args) -> int:
    operators.set_password(_db(args), args.name, read_password())
    print(f"password of {args.name} changed; its sessions are signed out")
    return 0


def cmd_remove(args) -> int:
    operators.remove_operator(_db(args), args.name)
    return 0


def cmd_list(args) -> int:
    found = operators.list_operators(_db(args))
    for line in table(("NAME", "CREATED", "LAST SIGN-IN"),
                      [(row["name"], row["created_at"], row["last_login_at"] or "-") for row in found]):
        print(line)
    if not found:
        print(f"no operator yet: {hint()}", file=sys.stderr)
    return 0


def add_commands(sub, common) -> None:
    o = sub.add_parser("operator", help="dashboard operator accounts").add_subparsers(dest="sub", required=True)
    for name, func, text in (("add", cmd_add, "add an operator (password from the terminal or stdin)"),
                             ("passwd", cmd_passwd, "change an operator's password (signs it out everywhere)"),
                             ("remove", cmd_remove, "remove an operator")):
        p = o.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("name", help="the operator's name (letters, digits, '_', '.', '@', '-')")
        p.set_defaults(func=func)
    p = o.add_parser("list", parents=[common], help="list operators", description="list operators")
    p.set_defaults(func=cmd_list)
