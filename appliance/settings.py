"""Settings: config/appliance.toml (or --config) overlaid with APPLIANCE_* environment variables.

Read once into a frozen object and passed down; there is no global mutable config.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "appliance.toml"


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    allow_loopback_targets: bool = False
    allow_http_webhooks: bool = False
    webhook_retry_scale: float = 1.0
    cpu_slots: int = 0
    memory_mb: int = 0
    memory_reserve_mb: int = 1024
    gpus: int = -1
    gpu_compute_slots: int = 1
    nvenc_sessions: int = -1
    nvenc_probe_max: int = 3
    gpu_overrides: str = ""
    encoder_probe: str = ""
    max_tasks_per_user: int = 0
    max_attempts: int = 2
    max_failed_jobs_per_hour: int = 60  # per user; past it new jobs are refused (429) until the hour turns
    executor: str = "local"
    dask_scheduler: str = ""
    dask_tls_dir: str = ""  # mutual TLS: ca.pem + appliance.pem/.key of `appliance cluster init`
    dask_worker_max_cpu: float = 0  # a worker's declared CPU counts at most this much (0: as declared)
    dask_worker_max_mem_mb: int = 0  # likewise its MEM
    render_timeout_s: int = 600
    task_cpu_seconds: int = 3600
    task_memory_mb: int = 4096
    task_file_size_mb: int = 4096
    task_max_processes: int = 256
    task_max_open_files: int = 1024
    sandbox: bool = True
    allow_unsandboxed: bool = False
    launcher_socket: str = ""
    task_disk_mb: int = 4096
    task_fs: str = "auto"  # "auto": each task's own filesystem where one can be made; "off": the measured quota
    task_log_mb: int = 16
    # a warm parent with torch and diffusers imported (and one CPU model loaded) serves model tasks until this
    # long after the last one; admission counts its memory meanwhile (runtime/warm_memory.py); 0: model tasks
    # start cold
    model_warm_idle_s: float = 600.0
    preload: tuple[str, ...] = ("numpy", "PIL", "manim", "renderers.manim_scene", "renderers.movie.compose",
                                "renderers.movie.assemble", "cv2", "renderers.image.pipeline")
    retention_days: int = 90
    min_free_disk_mb: int = 1024
    reserve_credits: int = 10
    initial_free_credits: int = 1000
    assets_dir: Path = Path("./assets")
    media_max_mb: int = 500
    media_timeout_s: int = 120
    rate_limit_requests: int = 120
    rate_limit_window_s: int = 60
    sse_keepalive_s: float = 15.0
    shared_cache: bool = False
    cache_max_gb: float = 50.0  # the render cache's artifacts, least recently used evicted past it (0: no limit)
    cache_max_days: int = 30  # a cache entry no task used for this long is evicted
    manim_split_min_animations: int = 12
    manim_split_max_workers: int = 0
    movie_scene_thread_sharing: bool = True
    task_start_timeout_s: int = 60
    hotfolder_dir: str = ""
    hotfolder_outbox: str = ""
    hotfolder_quality: str = "medium"
    hotfolder_rescan_s: float = 5.0  # the full rescan that catches missed events and users created since
    metrics_allow: tuple[str, ...] = ("127.0.0.1",)
    access_log: bool = True
    dashboard_session_hours: int = 12

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "appliance.db"


def _coerce(name: str, kind: type, value: Any) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise SettingsError(f"{name} must be true or false, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    if kind is tuple:
        return tuple(value.split(",")) if isinstance(value, str) else tuple(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {kind.__name__}, got {value!r}") from None


_KINDS = {"Path": Path, "str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}


def load(config: Path | None = None, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Defaults < TOML file < APPLIANCE_* environment < explicit overrides (CLI flags)."""
    env_vars: Mapping[str, str] = os.environ if environ is None else environ
    path = Path(config) if config else DEFAULT_CONFIG
    values: dict = tomllib.loads(path.read_text()) if path.exists() else {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SettingsError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
    for name in fields:
        env = env_vars.get(f"APPLIANCE_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    coerced: dict[str, Any] = {k: _coerce(k, _KINDS[str(fields[k].type)], v) for k, v in values.items()}
    if coerced.get("task_fs", "auto") not in ("auto", "off"):
        raise SettingsError(f"task_fs must be auto or off, got {coerced['task_fs']!r}")
    if not 0 <= coerced.get("model_warm_idle_s", 0) <= 86400:
        raise SettingsError(f"model_warm_idle_s must be 0 to 86400 seconds, got {coerced['model_warm_idle_s']}")
    return Settings(**coerced)
