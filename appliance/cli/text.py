"""What the CLI prints besides its data: tables sized to their content, and the command line that works here.

Kept free of heavy imports: the dashboard's sign-in page names the command too (api/dashboard/pages.py).
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[str] = ()) -> list[str]:
    """Lines of a table whose columns are as wide as their widest cell (a header or a value), two spaces apart;
    the last column is not padded. Columns named in ``right`` are right-aligned. No rows: no lines at all."""
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(values: Sequence[str]) -> str:
        out = []
        for i, (name, value) in enumerate(zip(headers, values, strict=True)):
            if name in right:
                out.append(value.rjust(widths[i]))
            else:
                out.append(value if i == last else value.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(list(headers)), *(line(row) for row in cells)]


def command() -> str:
    """How to run `appliance` from here: the bare name when the shell finds this very program on PATH, else the
    path of the venv's script (relative to the working directory when it lies below it, as `.venv/bin/appliance`
    after `make run`), else `python -m appliance.cli` with this interpreter."""
    script = Path(sys.executable).parent / "appliance"  # never resolved: a venv's python is a link to the system's
    found = shutil.which("appliance")
    if found and script.is_file() and os.path.samefile(found, script):
        return "appliance"
    if script.is_file() and os.access(script, os.X_OK):
        try:
            relative = script.absolute().relative_to(Path.cwd())
        except ValueError:
            return str(script.absolute())
        return str(relative) if str(relative).startswith(".") else f"./{relative}"
    if found:
        return "appliance"
    return f"{sys.executable} -m appliance.cli"
