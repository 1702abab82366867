"""The environment of every process the server starts to run or check untrusted work (the zygote, the
launcher's zygotes, the verifiers): short and explicit, so the server's secrets never reach them. Stdlib only,
a leaf: the launcher (root) imports it and nothing else of the server."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding appliance/ and renderers/


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/"),
            "PYTHONPATH": path,
            # The zygote (root, where the launcher runs it) imports from the checkout: it writes no __pycache__
            # there, where a root-owned file would be in the way of the next install.
            "PYTHONDONTWRITEBYTECODE": "1",
            # BLAS thread pools would make the zygote multi-threaded, and forking that is unsafe.
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
