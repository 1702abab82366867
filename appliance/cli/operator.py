"""`appliance operator add|passwd|remove|list`: the dashboard's operator accounts (not API users).

The password is read from the terminal (asked twice, never echoed) or, when stdin is not a terminal, as the first
line of stdin (`printf '%s\\n' "$PW" | appliance operator add alice`), so it never appears in argv or the shell's
history.
"""
from __future__ import annotations

import getpass
import sys

from appliance.errors import ApplianceError
from appliance.store import operators
from appliance.store.db import open_db

HINT = "create a dashboard operator with: appliance operator add NAME (it asks for a password)"


def _db(args):
    from appliance.cli import _settings

    return open_db(_settings(args).db_path)


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ApplianceError("the two passwords differ")
    return first


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
    print(f"{'NAME':<20} {'CREATED':<26} LAST SIGN-IN")
    for row in operators.list_operators(_db(args)):
        print(f"{row['name']:<20} {row['created_at']:<26} {row['last_login_at'] or '-'}")
    return 0


def add_commands(sub, common) -> None:
    o = sub.add_parser("operator", help="dashboard operator accounts").add_subparsers(dest="sub", required=True)
    for name, func, text in (("add", cmd_add, "add an operator (password from the terminal or stdin)"),
                             ("passwd", cmd_passwd, "change an operator's password (signs it out everywhere)"),
                             ("remove", cmd_remove, "remove an operator")):
        p = o.add_parser(name, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(func=func)
    o.add_parser("list", parents=[common], help="list operators").set_defaults(func=cmd_list)
