"""`appliance doctor`: each dependency or capacity line is OK, or says how to fix it."""
from __future__ import annotations

import shutil
import subprocess
import sys

from appliance.runtime.resources import Gpu, measure
from appliance.settings import Settings

APT = "apt-get install -y"


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:80] if out.returncode == 0 and text else None


def checks(settings: Settings) -> list[tuple[bool, str, str]]:
    """(ok, what, detail or fix)."""
    result = []
    for name, cmd, pkg in (("ffmpeg", ["ffmpeg", "-version"], "ffmpeg"),
                           ("ffprobe", ["ffprobe", "-version"], "ffmpeg"),
                           ("LaTeX", ["latex", "--version"], "texlive-latex-base texlive-latex-extra"),
                           ("dvisvgm", ["dvisvgm", "--version"], "dvisvgm")):
        version = _version(cmd)
        result.append((bool(version), name, version or f"missing: {APT} {pkg}  (or run `make run`)"))
    try:
        import manim

        result.append((True, "Manim", manim.__version__))
    except Exception as exc:  # noqa: BLE001 - any import failure is a doctor finding
        result.append((False, "Manim", f"cannot import ({exc}); run `make run` to install the venv"))
    result.extend(sandbox_lines(settings))
    cap = measure(settings)
    result.append((True, "capacity", f"{cap.cpu:g} CPU slots, {cap.mem_mb} MB for tasks, {cap.gpu} GPU(s)"
                                     f"{' (' + ', '.join(g.name for g in cap.gpus) + ')' if cap.gpus else ''}"))
    result.extend(gpu_lines(cap.gpus))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.data_dir).free // (1024 * 1024)
    ok = free >= settings.min_free_disk_mb
    result.append((ok, "free disk", f"{free} MB in {settings.data_dir}" + ("" if ok else
                   f" — below min_free_disk_mb={settings.min_free_disk_mb}: free space")))
    return result


def sandbox_lines(settings: Settings) -> list[tuple[bool, str, str]]:
    """The sandbox tasks get, and each layer. With ``launcher_socket`` (the service) tasks start in the root
    launcher's zygote, so that is asked: probed here, as the unprivileged user, every layer would look missing."""
    from appliance.runtime import sandbox

    if not settings.launcher_socket:
        mech, layers = sandbox.probe(), sandbox.layers(task_fs=settings.task_fs)
    else:
        from appliance.runtime.executors.local import LocalExecutor

        launcher = LocalExecutor(preload=(), launcher_socket=settings.launcher_socket, task_fs=settings.task_fs)
        try:
            launcher.start()
            mech, layers = launcher.mechanism, launcher.layers() or []
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, or no zygote: the finding
            return [(False, "sandbox", f"the launcher at {settings.launcher_socket} did not start a worker: {exc} "
                     "(is appliance-launcher.service running, and is this the user it serves? "
                     "run `sudo -u appliance appliance doctor`)")]
        finally:
            launcher.stop()
        mech = f"{mech} (via the launcher at {settings.launcher_socket})"
    lines = [("rlimits only" not in mech, "sandbox", mech)]
    return lines + [(active, f"- {name}:", detail) for name, active, detail in layers]  # active, or missing + fix


def gpu_lines(gpus: tuple[Gpu, ...]) -> list[tuple[bool, str, str]]:
    """What was probed on each GPU and why, e.g. "GPU 0 NVIDIA H200: … NVENC 0 (h264_nvenc failed: …)".
    A GPU without NVENC is not a fault: its encoding tasks use libx264."""
    if not gpus:
        return [(True, "- GPU:", "none found (nvidia-smi missing, failing or listing none): video is encoded "
                                 "with libx264")]
    return [(True, "- GPU:", g.describe()) for g in gpus]


def run_checks(settings: Settings) -> int:
    failed = 0
    for ok, what, detail in checks(settings):
        failed += not ok
        print(f"{'OK  ' if ok else 'FIX '} {what:<10} {detail}")
    print(f"python     {sys.version.split()[0]} at {sys.executable}")
    return 1 if failed else 0
