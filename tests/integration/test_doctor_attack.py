"""`appliance doctor --attack` (issue #17): every hostile scene it ships is contained on this kernel, against a
real server, and the command says so line by line with exit status 0. The attacks are the command's own; the test
checks that it ran them all and that none escaped or was inconclusive."""
from __future__ import annotations

import subprocess

import pytest

from appliance.cli.attack import attacks, verdict
from appliance.settings import Settings
from tests.conftest import PYTHON, ROOT

pytestmark = pytest.mark.slow


def test_every_attack_is_contained(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "4"})
    proc = subprocess.run([PYTHON, "-m", "appliance.cli", "doctor", "--attack", "--data-dir", str(server.data_dir),
                           "--port", str(server.port)], cwd=ROOT, env=server.env, capture_output=True, text=True,
                          timeout=400)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  ")]
    names = [a.name for a in attacks(Settings(data_dir=server.data_dir))]
    assert len(lines) == len(names) >= 15, proc.stdout + proc.stderr
    for name in names:
        line = next(line for line in lines if name in line)
        assert line.startswith("contained"), proc.stdout
    assert proc.returncode == 0 and "every attack was contained" in proc.stdout, proc.stdout + proc.stderr


def test_the_verdicts_call_an_accepted_output_a_wedge_and_an_escape_what_they_are():
    attack_list = {a.name: a for a in attacks(Settings())}
    fifo, userns = attack_list["FIFO output"], attack_list["user namespace"]
    assert verdict(fifo, {"status": "completed", "error": None})[0] is False  # its output was published
    assert verdict(fifo, None) == (False, "the job did not end within 180 s (a wedged slot)")
    assert verdict(fifo, {"status": "failed", "error": "x: is not a regular file (a FIFO)"})[0] is True
    assert verdict(userns, {"status": "failed", "error": "RuntimeError: ESCAPED: created a user namespace"}) == (
        False, "ESCAPED: created a user namespace")
    assert verdict(userns, {"status": "failed", "error": "SyntaxError"})[0] is False  # inconclusive is no pass
