"""Starting and stopping the server as an operator does (issue #17 item 6 and 9, issue #21 item 1): a busy port is
named with its fix before anything claims to serve; SIGTERM ends open progress streams cleanly (no traceback, no
5 s wait) and the job they followed resumes at the next start."""
from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest

from tests.conftest import PYTHON, ROOT, Server
from tests.integration.test_viralsync_api import small_movie, submit, vs, vs_box, wait  # noqa: F401 - fixtures


def test_a_busy_port_is_named_with_its_fix_and_nothing_claims_to_serve(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([PYTHON, "-m", "appliance.cli", "serve", "--data-dir", str(tmp_path / "var"),
                               "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc
    assert "serving" not in proc.stdout, proc.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr, proc.stderr
    assert "APPLIANCE_PORT" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_sigterm_ends_open_streams_cleanly_and_the_job_resumes(vs):  # noqa: F811 - the fixture
    job_id = submit(vs, small_movie(6, 2.0, "stop")).json()["jobId"]
    lines: list[str] = []
    with httpx.stream("GET", f"{vs.url}/v1/jobs/{job_id}/progress", headers=vs.h, timeout=30) as r:
        stream = r.iter_lines()
        while not any(line.startswith("event: progress") for line in lines):
            lines.append(next(stream))
        started = time.monotonic()
        vs.proc.terminate()
        lines.extend(stream)  # ends when the server closes it; raises if the connection is cut mid-frame
        ended_after = time.monotonic() - started
    assert ended_after < 4, f"the stream stayed open {ended_after:.1f} s after SIGTERM"
    assert vs.proc.wait(timeout=30) == 0
    log = (vs.data_dir / "server.log").read_text()
    assert "Traceback" not in log and "appliance stopped" in log, log[-2000:]
    again = Server(vs.data_dir, vs.env).start()
    again.h = vs.h
    try:
        done = wait(again, job_id)
        assert done["status"] == "done", done
    finally:
        again.stop()


def test_the_listening_socket_says_it_is_tcp():
    """asyncio sets TCP_NODELAY only on connections of a socket whose protocol is IPPROTO_TCP: a socket made with
    proto 0 made every response wait ~40 ms for the client's delayed ACK (make bench listing: 2 -> 44 ms)."""
    from appliance.cli import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()
