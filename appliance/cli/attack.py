"""``appliance doctor --attack``: the sandbox and the server tried as an attacker would, on this kernel.

It submits hostile Manim scenes to the appliance serving ``--data-dir`` (through its admin API, as a user of its
own, ``doctor-attack``, with tight limits so no attack costs the box more than seconds) and prints, per attack,
``contained`` or ``ESCAPED``. Each scene either proves its attack worked by raising ``ESCAPED: …`` or ends the
way containment looks (the job fails with the sandbox's reason, or completes with the attack refused). Run it
after every kernel or distribution upgrade: a namespace, seccomp or cgroup behaviour that changed shows here.
Exit status 0 only when every attack was contained; a job that never ends counts as escaped (a wedge).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from appliance.errors import ApplianceError
from appliance.settings import Settings

USER = "doctor-attack"
WAIT_S = 180
SIZE = {"width": 160, "height": 90, "fps": 5}
LIMITS = {"cpu_seconds": 60, "mem_mb": 600, "disk_mb": 64, "wall_seconds": 90}  # each attack's, at most


@dataclass(frozen=True)
class Attack:
    name: str
    body: str  # construct()'s code, indented by scene(); may raise RuntimeError("ESCAPED: …")
    contained: tuple[str, ...]  # ("completed",), or substrings one of which a failed job's error names
    cpu_seconds: int = LIMITS["cpu_seconds"]


def scene(body: str) -> str:
    lines = "".join(f"        {line}\n" for line in body.strip("\n").splitlines())
    return ("import ctypes, errno, json, os, socket, sys, time\nfrom manim import *\n\n"
            "class Attack(Scene):\n    def construct(self):\n"
            f"{lines}        self.add(Dot())\n        self.wait(0.2)\n")


def swap_output(body: str) -> str:
    """Let the renderer write its outputs, then ``body`` replaces one before the result goes out."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return ("import renderers.manim_scene as _m\n_orig = _m._write_outputs\n"
            "def _evil(*a, **k):\n    out = _orig(*a, **k)\n" + lines + "    return out\n"
            "_m._write_outputs = _evil\n")


def attacks(settings: Settings) -> list[Attack]:
    data_dir = settings.data_dir.resolve()
    token = data_dir / "admin.token"
    pipes = ("found = set()\nfor pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
             "    try: names = os.listdir(f'/proc/{pid}/fd')\n    except OSError: continue\n"
             "    for n in names:\n        path = f'/proc/{pid}/fd/{n}'\n"
             "        try:\n            if os.readlink(path).startswith('pipe:'): found.add(path)\n"
             "        except OSError: pass\n"
             "line = json.dumps({'type': 'result', 'result': {'files': {}, 'meta': {'forged': True}}}) + '\\n'\n"
             "for path in found:\n    try:\n        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
             "        os.write(fd, line.encode()); os.close(fd)\n    except OSError: pass\nos._exit(0)")
    return [
        Attack("user namespace", "if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0:\n"
               "    raise RuntimeError('ESCAPED: created a user namespace')", ("completed",)),
        Attack("network", f"for host, port in (('127.0.0.1', {settings.port}), ('1.1.1.1', 443)):\n"
               "    try:\n        socket.create_connection((host, port), timeout=2).close()\n"
               "    except OSError:\n        continue\n"
               "    raise RuntimeError(f'ESCAPED: connected to {host}:{port}')", ("completed",)),
        Attack("the server's data dir", f"try:\n    data = open({str(token)!r}).read()\nexcept OSError:\n"
               "    data = None\nif data:\n    raise RuntimeError('ESCAPED: read the admin token')", ("completed",)),
        Attack("TeX \\input", "try:\n    MathTex(r'\\input{" + str(token) + "}')\nexcept Exception:\n"
               "    pass\nelse:\n    raise RuntimeError('ESCAPED: TeX read the admin token')", ("completed",)),
        Attack("forged result (fd forgery)", pipes, ("without a result",)),
        Attack("FIFO output", swap_output("os.remove('captions.vtt')\nos.mkfifo('captions.vtt')"),
               ("is not a regular file (a FIFO)",)),
        Attack("symlink output", swap_output(f"os.remove('video.mp4')\nos.symlink({str(token)!r}, 'video.mp4')"),
               ("is a symbolic link",)),
        Attack("HLS disguise", swap_output("open('video.mp4', 'w').write('#EXTM3U\\n#EXTINF:1.0,\\n"
                                           f"{data_dir}/outputs/x/video.mp4\\n#EXT-X-ENDLIST\\n')"),
               ("is not a valid h264 file",)),
        Attack("hidden fallocate", "fd = os.open('hidden', os.O_RDWR | os.O_CREAT)\nos.unlink('hidden')\n"
               "os.posix_fallocate(fd, 0, 256 << 20)\ntime.sleep(10)\n"
               "raise RuntimeError('ESCAPED: held 256 MB hidden under a 64 MB quota')", ("disk quota exceeded",)),
        Attack("fallocate past the quota", "fd = os.open('big', os.O_RDWR | os.O_CREAT)\ntry:\n"
               "    os.posix_fallocate(fd, 0, 256 << 20)\nexcept OSError:\n    pass\ntime.sleep(5)\n"
               "if os.fstat(fd).st_blocks * 512 > 128 << 20:\n"
               "    raise RuntimeError('ESCAPED: allocated 128 MB under a 64 MB quota')", ("disk quota exceeded",)),
        Attack("sparse writes past the quota", "fd = os.open('sparse', os.O_RDWR | os.O_CREAT)\n"
               "os.ftruncate(fd, 3 << 30)\ntry:\n    for i in range(96):\n"
               "        os.pwrite(fd, b'x' * (1 << 20), i * (32 << 20))\nexcept OSError:\n    pass\ntime.sleep(5)\n"
               "if os.fstat(fd).st_blocks * 512 > 80 << 20:\n"
               "    raise RuntimeError('ESCAPED: wrote 96 MB of a sparse file under a 64 MB quota')",
               ("disk quota exceeded",)),
        Attack("inode flood", "os.mkdir('d')\nfor i in range(40000):\n    open(f'd/{i}', 'w').close()\n"
               "time.sleep(3)\nraise RuntimeError('ESCAPED: made 40000 files')", ("too many files",)),
        Attack("fork bomb", "kids = []\ntry:\n    while len(kids) < 5000:\n        pid = os.fork()\n"
               "        if pid == 0:\n            time.sleep(60); os._exit(0)\n        kids.append(pid)\n"
               "except OSError:\n    pass\nfor pid in kids:\n    os.kill(pid, 9); os.waitpid(pid, 0)\n"
               "if len(kids) >= 5000:\n    raise RuntimeError('ESCAPED: forked 5000 processes')", ("completed",)),
        Attack("memory bomb", "chunks = []\nfor _ in range(160):\n    chunks.append(bytearray(64 << 20))\n"
               "raise RuntimeError('ESCAPED: held 10 GB')", ("memory limit exceeded", "MemoryError")),
        Attack("CPU in many processes", "for _ in range(3):\n    if os.fork() == 0:\n"
               "        while True: pass\ntime.sleep(20)\nraise RuntimeError('ESCAPED: 3 spinners ran 20 s "
               "under a 4 s limit')", ("cpu time limit exceeded",), cpu_seconds=4),
    ]


def verdict(attack: Attack, job: dict | None) -> tuple[bool, str]:
    """(contained, what happened)."""
    if job is None:
        return False, f"the job did not end within {WAIT_S} s (a wedged slot)"
    error = job.get("error") or ""
    if "ESCAPED" in error:
        return False, error[error.index("ESCAPED"):][:200]
    if attack.contained == ("completed",):
        ok = job["status"] == "completed"
        return ok, "refused inside the sandbox" if ok else f"inconclusive: {job['status']}: {error[:200]}"
    if job["status"] == "completed":
        return False, "the job completed: its hostile output was accepted"
    ok = any(reason in error for reason in attack.contained)
    return ok, error[:200] if ok else f"inconclusive: {error[:200]}"


def run(settings: Settings) -> int:
    from appliance.cli.client import AdminClient
    from appliance.store import users
    from appliance.store.db import open_db

    db = open_db(settings.data_dir / "appliance.db")
    if users.get_user_by_name(db, USER) is None:
        users.create_user(db, USER)
    client = AdminClient(settings)
    listed = attacks(settings)
    jobs = {}
    for attack in listed:
        body = {"user": USER, "renderer": "manim", "limits": {**LIMITS, "cpu_seconds": attack.cpu_seconds},
                "input": {"code": scene(attack.body), "className": "Attack", **SIZE, "case": attack.name}}
        jobs[attack.name] = client._call("POST", "/jobs", json=body)["id"]
    ended: dict[str, dict] = {}
    deadline = time.monotonic() + WAIT_S
    while len(ended) < len(jobs) and time.monotonic() < deadline:
        for name, job_id in jobs.items():
            if name not in ended:
                job = client._call("GET", f"/jobs/{job_id}")
                if job["status"] in ("completed", "failed", "cancelled"):
                    ended[name] = job
        time.sleep(0.5)
    escaped = 0
    print(f"appliance doctor --attack: {len(listed)} attacks on {settings.base_url}")
    for attack in listed:
        ok, detail = verdict(attack, ended.get(attack.name))
        escaped += not ok
        print(f"  {'contained' if ok else 'ESCAPED  '}  {attack.name:<28} {detail}")
        if attack.name not in ended:
            try:
                client.cancel(jobs[attack.name])
            except ApplianceError:
                pass
    print("every attack was contained" if not escaped else f"{escaped} attack(s) not contained")
    return 1 if escaped else 0
