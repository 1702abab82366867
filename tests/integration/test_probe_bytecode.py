"""The sandbox probe runs in a fresh interpreter (as root, under the service): it writes no __pycache__ into the
checkout (issue #17 item 9), whatever the caller's environment says."""
from __future__ import annotations

import importlib
import os
import shutil

from tests.conftest import ROOT


def test_the_fresh_probe_writes_no_bytecode_into_the_checkout(monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    for cache in (ROOT / "appliance").rglob("__pycache__"):  # left by a run that did write: this test's subject
        shutil.rmtree(cache, ignore_errors=True)
    probe = importlib.import_module("appliance.runtime.sandbox.probe")  # the package exports a function `probe`
    assert probe.layers([])  # the fresh interpreter ran and answered
    assert not list((ROOT / "appliance").rglob("*.pyc")), [str(p) for p in (ROOT / "appliance").rglob("*.pyc")]
    assert os.environ.get("PYTHONDONTWRITEBYTECODE") is None
