"""Run one renderer directly, in this process: ``python -m renderers NAME INPUT.json WORKDIR``.

Messages go to stdout as JSON lines; the last line is ``{"type": "result", ...}`` or
``{"type": "error", "message": ...}`` (exit status 1). Used by tests and for debugging a renderer
outside the scheduler and the sandbox.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from renderers.base import JsonLinesReporter, RenderError
from renderers.registry import default_registry


def main(argv: list[str]) -> int:
    name, input_path, workdir = argv
    reporter = JsonLinesReporter(sys.stdout.buffer)
    task_input = json.loads(Path(input_path).read_text())
    Path(workdir).mkdir(parents=True, exist_ok=True)
    try:
        outputs = default_registry().load(name)(task_input, Path(workdir), reporter)
    except RenderError as exc:
        reporter._send({"type": "error", "message": str(exc)})
        return 1
    reporter._send({"type": "result", "outputs": outputs})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
