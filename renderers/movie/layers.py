"""Per-layer-type drawing for movie scenes.

Text and image layers become a ``Sprite``: drawn ONCE with Pillow into an RGBA image with fit, scale, rotation and
opacity already applied, placed on the canvas. Video and audio layers become ffmpeg-python filter chains.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from renderers.base import RenderError

AUDIO_RATE = 48000
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
_FAMILY_FILES = {
    "sans": "DejaVuSans", "sans-serif": "DejaVuSans", "dejavu sans": "DejaVuSans",
    "serif": "DejaVuSerif", "dejavu serif": "DejaVuSerif",
    "mono": "DejaVuSansMono", "monospace": "DejaVuSansMono", "dejavu sans mono": "DejaVuSansMono",
    "condensed": "DejaVuSansCondensed", "dejavu sans condensed": "DejaVuSansCondensed",
}
_FALLBACK_FONT = "DejaVuSans"


@dataclass(frozen=True)
class Window:
    """When a layer is on screen, in output frames [first, end) and in seconds."""

    first: int
    end: int
    start: float
    stop: float
    fade_in: float
    fade_out: float

    def alpha(self, frame: int, fps: int) -> float:
        """Visibility at a frame (0..1): the same ramps as ffmpeg's ``fade`` filter."""
        if not self.first <= frame < self.end:
            return 0.0
        t, level = frame / fps, 1.0
        if self.fade_in:
            level = min(level, (t - self.start) / self.fade_in)
        if self.fade_out:
            level = min(level, (self.stop - t) / self.fade_out)
        return max(0.0, min(1.0, level))

    @property
    def fades(self) -> bool:
        return bool(self.fade_in or self.fade_out)


def window(layer: dict, fps: int, frames: int) -> Window:
    first = min(round(layer["startTime"] * fps), frames - 1)
    end = max(first + 1, min(frames, round((layer["startTime"] + layer["duration"]) * fps)))
    return Window(first, end, first / fps, end / fps, layer.get("fadeIn", 0), layer.get("fadeOut", 0))


def draw_order(layers: list[dict]) -> list[dict]:
    """Visual layers bottom to top: role "background" first, then zIndex; ties keep array order."""
    visual = [layer for layer in layers if layer["type"] != "audio"]
    return sorted(visual, key=lambda layer: (layer.get("role") != "background", layer["zIndex"]))


def scaled_box(layer: dict) -> tuple[int, int, float, float]:
    """The layer box after transform.scale (around its centre): width, height, centre x, centre y."""
    size, pos, scale = layer["size"], layer["position"], layer["transform"]["scale"]
    width, height = max(1, round(size["width"] * scale)), max(1, round(size["height"] * scale))
    return width, height, pos["x"] + size["width"] / 2, pos["y"] + size["height"] / 2


def rgba(color: str) -> tuple[int, int, int, int]:
    digits = color.lstrip("#")
    alpha = int(digits[6:8], 16) if len(digits) == 8 else 255
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), alpha


# --- sprites (text and image layers) ------------------------------------------------------------------------

@dataclass
class Sprite:
    layer_id: str
    image: Image.Image  # RGBA, final look (opacity included)
    x: int
    y: int
    window: Window

    @functools.cached_property
    def rgb(self) -> Image.Image:
        return self.image.convert("RGB")

    @functools.cached_property
    def mask(self) -> Image.Image:
        return self.image.getchannel("A")

    def faded_mask(self, level: int) -> Image.Image:
        """The alpha mask at ``level``/255 of full visibility (fades)."""
        return self.mask if level >= 255 else self.mask.point(lambda v: v * level // 255)


def make_sprite(layer: dict, source: Path | None, win: Window) -> Sprite:
    width, height, cx, cy = scaled_box(layer)
    if layer["type"] == "text":
        image = render_text(layer, width, height)
    else:
        image = fit_image(open_image(layer, source), layer["fit"], width, height)
    image = finish(image, layer["transform"])
    return Sprite(layer["id"], image, round(cx - image.width / 2), round(cy - image.height / 2), win)


def finish(image: Image.Image, transform: dict) -> Image.Image:
    """Apply opacity and rotation (degrees clockwise, about the centre; the canvas grows to fit)."""
    if transform["opacity"] < 1:
        opacity = transform["opacity"]
        image.putalpha(image.getchannel("A").point(lambda v: round(v * opacity)))
    if transform["rotation"] % 360:
        image = image.rotate(-transform["rotation"], resample=Image.Resampling.BICUBIC, expand=True)
    return image


def open_image(layer: dict, source: Path | None) -> Image.Image:
    if source is None:
        raise RenderError(f"layer {layer['id']}: its source was not fetched")
    try:
        with Image.open(source) as image:
            image.seek(0)  # an animated GIF or WebP shows its first frame
            return ImageOps.exif_transpose(image).convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RenderError(f"layer '{layer['id']}': cannot decode image ({type(exc).__name__})") from None


def fit_image(image: Image.Image, fit: str, width: int, height: int) -> Image.Image:
    if fit == "fill":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if fit == "cover":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    ratio = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, Image.Resampling.LANCZOS)


# --- text ---------------------------------------------------------------------------------------------------

def is_bold(weight: str) -> bool:
    return weight in ("bold", "bolder") or (weight[:1].isdigit() and float(weight) >= 600)


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in FONT_DIRS:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.suffix.lower() in (".ttf", ".otf", ".ttc"):
                found.setdefault(path.stem.lower(), str(path))
    return found


def font_file(family: str, bold: bool) -> str:
    """A font file for a CSS-like family name: DejaVu for the generic names, else any installed match."""
    fonts = _installed_fonts()
    stems = [_FAMILY_FILES.get(family.strip().lower(), family.replace(" ", "")), _FALLBACK_FONT]
    for stem in stems:
        names = [f"{stem}-Bold", f"{stem}Bold", stem] if bold else [stem, f"{stem}-Regular"]
        for name in names:
            if name.lower() in fonts:
                return fonts[name.lower()]
    raise RenderError(f"no font found for family {family!r}")


@functools.lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _split_word(word: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Break a word wider than the box into pieces that fit (at least one character each)."""
    pieces, piece = [], ""
    for char in word:
        if piece and font.getlength(piece + char) > width:
            pieces.append(piece)
            piece = ""
        piece += char
    return pieces + [piece]


def wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Greedy word wrap inside ``width`` pixels; explicit newlines start new lines."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            for piece in _split_word(word, font, width) if font.getlength(word) > width else [word]:
                candidate = f"{line} {piece}" if line else piece
                if line and font.getlength(candidate) > width:
                    lines.append(line)
                    candidate = piece
                line = candidate
        lines.append(line)
    return lines


def _line_x(align: str, line_width: float, left: float, inner: float) -> float:
    if align == "center":
        return left + (inner - line_width) / 2
    return left + inner - line_width if align == "right" else left


def _fits(text: str, font: ImageFont.FreeTypeFont, line_height: float, inner_w: float, inner_h: float) -> bool:
    """Every word fits the width (no word broken) and every line fits the height (no glyph cut)."""
    if any(font.getlength(word) > inner_w for word in text.split()):
        return False
    ascent, descent = font.getmetrics()
    lines = wrap(text, font, inner_w)
    return (len(lines) - 1) * line_height * font.size + ascent + descent <= inner_h


def fitted_font(layer: dict, path: str, size: int, inner_w: float, inner_h: float) -> ImageFont.FreeTypeFont:
    """``textFit: shrink`` (the default, as hosted editors do): the largest size up to fontSize at which the text
    fits its box whole; ``none``: fontSize as given, wrapped and clipped."""
    if layer.get("textFit", "shrink") == "none" or _fits(layer["text"], _font(path, size), layer["lineHeight"],
                                                          inner_w, inner_h):
        return _font(path, size)
    low, high = 1, size - 1  # binary search for the largest size that fits
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(layer["text"], _font(path, middle), layer["lineHeight"], inner_w, inner_h):
            low = middle
        else:
            high = middle - 1
    return _font(path, low)


def _text_mask(layer: dict, width: int, height: int) -> Image.Image:
    """Glyph coverage (L) of the wrapped text, vertically centred in the box and clipped to it."""
    scale = layer["transform"]["scale"]
    pad = layer["padding"] * scale
    inner_w, inner_h = max(1.0, width - 2 * pad), max(1.0, height - 2 * pad)
    font = fitted_font(layer, font_file(layer["fontFamily"], is_bold(layer["fontWeight"])),
                       max(1, round(layer["fontSize"] * scale)), inner_w, inner_h)
    lines = wrap(layer["text"], font, inner_w)
    ascent, descent = font.getmetrics()
    line_h = layer["lineHeight"] * font.size
    top = pad + max(0.0, (inner_h - line_h * len(lines)) / 2)
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for index, line in enumerate(lines):
        baseline = top + index * line_h + (line_h - ascent - descent) / 2 + ascent
        x = _line_x(layer["textAlign"], font.getlength(line), pad, inner_w)
        draw.text((x, baseline), line, font=font, fill=255, anchor="ls")
    return mask


def render_text(layer: dict, width: int, height: int) -> Image.Image:
    """The text box as RGBA: optional background colour, then the text in its colour (straight alpha)."""
    background = rgba(layer["backgroundColor"]) if layer["backgroundColor"] else (0, 0, 0, 0)
    box = Image.new("RGBA", (width, height), background)
    color = rgba(layer["color"])
    ink = Image.new("RGBA", (width, height), color)
    coverage = _text_mask(layer, width, height)
    ink.putalpha(coverage if color[3] == 255 else coverage.point(lambda v: v * color[3] // 255))
    box.alpha_composite(ink)
    return box


# --- video and audio (ffmpeg-python chains) ---------------------------------------------------------------------

_MATRICES = {"bt709": "bt709", "smpte170m": "bt601", "bt470bg": "bt601", "bt2020nc": "bt2020", "bt2020c": "bt2020",
             "smpte240m": "smpte240m", "fcc": "fcc"}


def source_matrix(stream: dict) -> str:
    """A video stream's YUV matrix: its tag, else what players assume (BT.709 from 720 lines up)."""
    guess = "bt709" if int(stream.get("height") or 0) >= 720 else "bt601"
    return _MATRICES.get(stream.get("color_space", ""), guess)


def to_yuv(stream, pix_fmt: str = "yuv420p", **scale):
    """Convert (and optionally scale) to BT.709 limited-range YUV, the colours every scene clip is tagged with."""
    return stream.filter("scale", **scale, out_color_matrix="bt709", out_range="tv").filter("format", pix_fmt)


def fit_video(stream, fit: str, width: int, height: int, matrix: str, threads: int = 0, pix_fmt: str = "yuva420p"):
    """Scale a video into its box (YUV with alpha, BT.709) as ``fit`` says; ``matrix`` is the source's.

    ``threads`` caps this scaler's slice threads (0: the filter graph's count); every ``scale`` filter otherwise
    starts a pool as large as the graph's, one per video layer. ``pix_fmt`` yuv420p: an opaque base layer that
    nothing is blended onto (``layered.base_video``) carries no alpha plane."""
    common = {"in_color_matrix": matrix, **({"threads": threads} if threads else {})}
    if fit == "fill":
        return to_yuv(stream, pix_fmt, w=width, h=height, **common)
    if fit == "cover":
        stream = to_yuv(stream, pix_fmt, w=width, h=height, force_original_aspect_ratio="increase", **common)
        return stream.filter("crop", width, height)
    return to_yuv(stream, pix_fmt, w=width, h=height, force_original_aspect_ratio="decrease",
                  force_divisible_by=2, **common)


def fade_filters(stream, win: Window, alpha: bool):
    """Fade a video stream's alpha (times on the scene clock)."""
    if win.fade_in:
        stream = stream.filter("fade", t="in", st=win.start, d=win.fade_in, alpha=int(alpha))
    if win.fade_out:
        stream = stream.filter("fade", t="out", st=win.stop - win.fade_out, d=win.fade_out, alpha=int(alpha))
    return stream


def audio_chain(stream, layer: dict, win: Window, channels: int):
    """A layer's audio trimmed to its duration, with volume and fades, delayed to its start in the scene.

    Mono plays at full level on both sides (a plain upmix would lower it by 3 dB); more channels are downmixed.
    """
    audio = stream.filter("asetpts", "PTS-STARTPTS").filter("atrim", duration=win.stop - win.start)
    if channels == 1:
        audio = audio.filter("channelmap", map="0-FL|0-FR", channel_layout="stereo")
    audio = audio.filter("aresample", AUDIO_RATE).filter("aformat", channel_layouts="stereo")
    if layer["volume"] != 1:
        audio = audio.filter("volume", layer["volume"])
    if layer.get("fadeIn"):
        audio = audio.filter("afade", t="in", st=0, d=layer["fadeIn"])
    if layer.get("fadeOut"):
        audio = audio.filter("afade", t="out", st=win.stop - win.start - layer["fadeOut"], d=layer["fadeOut"])
    delay = round(win.start * AUDIO_RATE)
    return audio.filter("adelay", delays=f"{delay}S", all=1) if delay else audio
