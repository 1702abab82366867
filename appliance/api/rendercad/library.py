"""The asset library behind api_discovery.php?action=backgrounds|textures.

Two folders per kind: procedurally generated defaults (made on first use under the data dir) and the
operator's own, `<assets_dir>/backgrounds` and `<assets_dir>/textures`. Files dropped there appear on the next
request (the listing is re-read when a folder changes); a sub-folder names the category, else the part of the
file name before the first dash. Thumbnails are made on demand and served by the appliance."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

KINDS = ("backgrounds", "textures")
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
THUMB = 256
# name -> (top colour, bottom colour) or (base colour, noise amount) for the generated defaults
DEFAULT_BACKGROUNDS = {
    "studio-white-sweep": ((250, 250, 250), (214, 214, 214)), "studio-warm-grey": ((226, 220, 212), (170, 162, 152)),
    "studio-charcoal": ((70, 72, 76), (24, 25, 28)), "studio-sky-blue": ((214, 232, 250), (120, 160, 210)),
    "studio-blush": ((250, 226, 222), (214, 170, 170)), "studio-sage": ((220, 232, 214), (150, 172, 140)),
    "exterior-sunset": ((255, 196, 130), (120, 80, 130)), "exterior-overcast": ((200, 206, 212), (150, 154, 150)),
    "interior-warm-wall": ((236, 222, 200), (160, 130, 100)), "interior-concrete": ((190, 190, 186), (120, 120, 116)),
}
DEFAULT_TEXTURES = {
    "metal-brushed-steel": ((170, 172, 176), 18), "metal-copper": ((184, 115, 70), 16),
    "wood-oak": ((160, 118, 76), 30), "wood-walnut": ((96, 64, 44), 26), "stone-granite": ((128, 126, 124), 48),
    "stone-marble": ((232, 230, 226), 14), "fabric-linen": ((214, 204, 186), 22), "fabric-denim": ((62, 84, 126), 26),
    "plastic-matte-black": ((34, 34, 36), 8), "leather-tan": ((166, 112, 70), 20),
}
_lock = threading.Lock()
_cache: dict[tuple, list[dict]] = {}


def _sweep(top: tuple, bottom: tuple) -> Any:
    from PIL import Image

    mask = Image.linear_gradient("L").resize((512, 512))
    return Image.composite(Image.new("RGB", (512, 512), bottom), Image.new("RGB", (512, 512), top), mask)


def _grain(name: str, color: tuple, sigma: float) -> Any:
    from PIL import Image, ImageChops, ImageFilter

    noise = Image.effect_noise((512, 512), sigma).filter(ImageFilter.GaussianBlur(1.2))
    if name.startswith(("metal", "wood", "fabric")):  # grain runs one way
        noise = noise.resize((512, 32)).resize((512, 512))
    img = ImageChops.multiply(Image.new("RGB", (512, 512), color), Image.merge("RGB", [noise] * 3))
    return ImageChops.add(img, Image.new("RGB", (512, 512), tuple(c // 3 for c in color)))


def _generate(folder: Path, kind: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table: dict[str, tuple[Any, Any]] = DEFAULT_BACKGROUNDS if kind == "backgrounds" else DEFAULT_TEXTURES
    for name, (first, second) in table.items():
        path = folder / f"{name}.webp"
        if path.exists():
            continue
        img = _sweep(first, second) if kind == "backgrounds" else _grain(name, first, second)
        tmp = path.with_suffix(".tmp")
        img.save(tmp, "WEBP", quality=85)
        tmp.replace(path)


def folders(settings, kind: str) -> list[Path]:
    defaults = settings.data_dir / "asset-library" / kind
    if not defaults.exists() or len(list(defaults.glob("*.webp"))) < len(DEFAULT_BACKGROUNDS):
        with _lock:
            _generate(defaults, kind)
    return [defaults, Path(settings.assets_dir) / kind]


def _stamp(folder: Path) -> tuple:
    """What changes when a file is added, removed or replaced anywhere below the folder."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((str(d), d.stat().st_mtime_ns) for d in [folder, *folder.rglob("*")] if d.is_dir()))


def _entry(kind: str, root: Path, path: Path) -> dict:
    rel = path.relative_to(root)
    asset_id = hashlib.sha256(f"{kind}/{root.name}/{rel}".encode()).hexdigest()[:24]
    stem = path.stem
    category = rel.parts[0] if len(rel.parts) > 1 else (stem.split("-", 1)[0] if "-" in stem else "general")
    words = stem.split("-", 1)[1] if len(rel.parts) == 1 and "-" in stem else stem
    return {"id": asset_id, "name": words.replace("-", " ").replace("_", " ").strip().title(),
            "category": category.lower(), "path": str(path)}


def listing(settings, kind: str) -> list[dict]:
    roots = folders(settings, kind)
    key = (kind, *(_stamp(r) for r in roots))
    with _lock:
        if key not in _cache:
            found = [_entry(kind, root, p) for root in roots if root.is_dir()
                     for p in sorted(root.rglob("*")) if p.suffix.lower() in EXTENSIONS and p.is_file()]
            _cache.clear()
            _cache[key] = found
        return _cache[key]


def find(settings, kind: str, asset_id: str) -> dict | None:
    return next((a for a in listing(settings, kind) if a["id"] == asset_id), None)


def thumbnail(settings, kind: str, asset_id: str) -> Path | None:
    """A 256-pixel WebP of the asset, made once (blocking: call it in a worker thread)."""
    from PIL import Image

    asset = find(settings, kind, asset_id)
    if asset is None:
        return None
    out = settings.data_dir / "asset-thumbs" / f"{asset_id}.webp"
    if not out.exists() or out.stat().st_mtime < Path(asset["path"]).stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(asset["path"]) as source:
                source.draft("RGB", (THUMB, THUMB))
                img = source.convert("RGB")
                img.thumbnail((THUMB, THUMB))
                tmp = out.with_suffix(".tmp")
                img.save(tmp, "WEBP", quality=80)
                tmp.replace(out)
        except Exception:  # noqa: BLE001 - a broken file in the operator's folder has no thumbnail
            return None
    return out
