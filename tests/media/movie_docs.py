"""Movie documents shaped like real template libraries, for the conformance suite (tests/integration/
test_movie_conformance.py). Each document says, beside each layer, what its content looks like (``Paint``), so
the oracle (movie_oracle.py) knows what every layer must show where and when; and which windows must be loud or
silent. ``make_media`` writes every file the documents name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tests.media import movie as m
from tests.media.movie_oracle import Paint

COLORS = {"red": (230, 30, 40), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (240, 210, 20),
          "orange": (250, 140, 0), "white": (255, 255, 255), "purple": (140, 40, 200)}
ALPHA_CLIPS = {"vp9-webm": "alpha_vp9.webm", "vp8-webm": "alpha_vp8.webm", "prores-4444": "alpha_prores.mov",
               "png-mov": "alpha_png.mov", "qtrle-mov": "alpha_qtrle.mov", "gif": "alpha.gif", "apng": "alpha.png",
               "webp-animated": "alpha.webp"}
COVERING_FONT = "(a font that covers Doc.needs)"  # the test names the installed font's file here
CLIPS = {"ramp.mp4": (25, 4), "ramp30.mp4": (30, 3), "ramp60.mp4": (60, 3), "short.mp4": (25, 1)}


def make_media(folder: Path) -> Path:
    for name, (rate, seconds) in CLIPS.items():
        m.ramp_clip(folder / name, rate=rate, seconds=seconds, audio=name == "ramp.mp4")
    m.tone(folder / "music.m4a", seconds=8, frequency=440)
    m.ffmpeg(folder / "voice.m4a", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=2", "-ac", "1",
             "-c:a", "aac")
    for name, rgb in COLORS.items():
        Image.new("RGB", (160, 90), rgb).save(folder / f"{name}.png")
        Image.new("RGB", (160, 90), rgb).save(folder / f"photo_{name}.jpg", quality=95)
        half = Image.new("RGBA", (160, 90), (*rgb, 255))
        half.paste((0, 0, 0, 0), (80, 0, 160, 90))
        half.save(folder / f"half_{name}.png")
    for kind in ALPHA_CLIPS:
        m.alpha_clip(folder, kind, seconds=4)
    return folder


@dataclass
class Doc:
    name: str
    width: int
    height: int
    fps: int = 25
    fast: bool = False
    scenes: list[dict] = field(default_factory=list)
    paints: list[dict[str, Paint]] = field(default_factory=list)
    loud: list[tuple[float, float]] = field(default_factory=list)  # movie-time windows with sound
    quiet: list[tuple[float, float]] = field(default_factory=list)  # ... and with silence
    needs: str = ""  # a character some installed font must cover, else the document is skipped

    def scene(self, duration: float, bg: str = "#101820") -> Doc:
        self.scenes.append({"id": f"s{len(self.scenes)}", "duration": duration, "bgColor": bg, "layers": []})
        self.paints.append({})
        return self

    def _add(self, layer: dict, paint: Paint) -> Doc:
        scene = self.scenes[-1]
        layer = {"id": f"l{len(scene['layers'])}", **layer}
        scene["layers"].append(layer)
        self.paints[-1][layer["id"]] = paint
        return self

    @staticmethod
    def _box(x: float, y: float, w: float, h: float) -> dict:
        return {"position": {"x": x, "y": y}, "size": {"width": w, "height": h}}

    def box(self, color: str, x: float, y: float, w: float, h: float, text: str = "", pad: float | None = None,
            **extra) -> Doc:
        """A text layer with a background colour (a lower third, a caption bar, a price tag)."""
        pad = min(16.0, max(10.0, round(h / 6, 1))) if pad is None else pad
        background = "#{:02x}{:02x}{:02x}".format(*COLORS[color])
        layer = {"type": "text", "text": text, "backgroundColor": background, "padding": pad,
                 "fontSize": max(12, h / 3), **self._box(x, y, w, h), **extra}
        return self._add(layer, Paint("band" if text else "solid", COLORS[color], pad=pad))

    def text(self, text: str, x: float, y: float, w: float, h: float, **extra) -> Doc:
        return self._add({"type": "text", "text": text, **self._box(x, y, w, h), **extra}, Paint("unknown"))

    def image(self, color: str, x: float, y: float, w: float, h: float, half: bool = False, photo: bool = False,
              **extra) -> Doc:
        name = f"half_{color}.png" if half else f"photo_{color}.jpg" if photo else f"{color}.png"
        layer = {"type": "image", "source": self._src(name), "fit": "fill", **self._box(x, y, w, h), **extra}
        return self._add(layer, Paint("half" if half else "solid", COLORS[color]))

    def video(self, clip: str, x: float, y: float, w: float, h: float, **extra) -> Doc:
        layer = {"type": "video", "source": self._src(clip), "fit": "fill", **self._box(x, y, w, h), **extra}
        if clip in CLIPS:
            rate, seconds = CLIPS[clip]
            return self._add(layer, Paint("ramp", clip=Path(clip), rate=rate, seconds=seconds))  # in the media
        return self._add(layer, Paint("half", (255, 0, 0)))  # the alpha clips: red left half, clear right half

    def audio(self, clip: str, **extra) -> Doc:
        self.scenes[-1]["layers"].append({"id": f"a{len(self.scenes[-1]['layers'])}", "type": "audio",
                                          "source": self._src(clip), **extra})
        return self

    def _src(self, name: str) -> str:
        return name  # sources are file names; the test maps them to URLs or staged files

    def movie(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": self.fps, "scenes": self.scenes}


# --- the documents ------------------------------------------------------------------------------------------------

def news_intro(w: int = 1920, h: int = 1080, fast: bool = False) -> Doc:
    d = Doc(f"news-intro-{w}x{h}", w, h, fast=fast).scene(3)
    d.video("ramp.mp4", 0, 0, w, h, role="background", volume=0)
    d.box("red", 0, h * 0.72, w * 0.7, h * 0.12, "BREAKING NEWS: markets rally", startTime=0.5)
    d.image("white", w * 0.85, h * 0.05, w * 0.1, h * 0.1, startTime=0.2)
    d.box("blue", w * 0.05, h * 0.05, w * 0.3, h * 0.1, "LIVE", startTime=1, duration=1.5)
    d.audio("music.m4a", volume=0.5)
    d.loud, d.quiet = [(0.2, 2.8)], []
    return d


def slideshow(w: int = 1920, h: int = 1080, fast: bool = False) -> Doc:
    """Stills with a Ken Burns-like zoom: each photo in steps of growing scale, the last step fading out."""
    d = Doc("slideshow-kenburns" + ("-small" if fast else ""), w, h, fast=fast).scene(4, "#000000")
    for index, color in enumerate(("red", "green", "blue", "yellow")):
        for step in range(3):
            d.image(color, 0, 0, w, h, photo=True, startTime=index + step / 3, duration=1 / 3,
                    transform={"scale": 1 + 0.04 * step}, zIndex=index)
    d.audio("music.m4a", volume=0.3, fadeOut=1)
    d.loud = [(0.2, 2.8)]
    return d


def product_ad(logos: int, w: int = 1920, h: int = 1080, fast: bool = False) -> Doc:
    d = Doc(f"product-ad-{logos}-logos" + ("-small" if fast else ""), w, h, fast=fast).scene(3, "#ffffff")
    d.video("ramp.mp4", w * 0.3, h * 0.2, w * 0.4, h * 0.4, mute=True)
    columns = 20
    size = w / columns
    for i in range(logos):
        d.image("orange", (i % columns) * size, h - size * (1 + i // columns), size * 0.9, size * 0.9 * 9 / 16,
                startTime=round(i * 2 / logos, 3))
    d.box("purple", w * 0.3, h * 0.05, w * 0.4, h * 0.1, "$19.99", startTime=1)
    return d


def lower_third(w: int = 1920, h: int = 1080) -> Doc:
    d = Doc("lower-third-over-footage", w, h).scene(4)
    d.video("ramp.mp4", 0, 0, w, h, volume=0.8)
    d.box("blue", w * 0.05, h * 0.75, w * 0.5, h * 0.1, "Jane Doe", startTime=0.5, duration=3, fadeIn=0.3,
          fadeOut=0.3)
    d.box("yellow", w * 0.05, h * 0.85, w * 0.35, h * 0.06, "Chief Economist", startTime=0.8, duration=2.5)
    d.loud = [(0.2, 3.8)]
    return d


def portrait_story(w: int = 1080, h: int = 1920, fast: bool = False) -> Doc:
    d = Doc("portrait-story" + ("-small" if fast else ""), w, h, fast=fast)
    d.scene(2).video("ramp30.mp4", 0, 0, w, h, mute=True).box("green", w * 0.1, h * 0.7, w * 0.8, h * 0.08,
                                                                 "Swipe up", startTime=0.5)
    d.scene(2, "#202020").image("red", w * 0.1, h * 0.2, w * 0.8, w * 0.45).text("Day 2 in Lisbon", w * 0.1, h * 0.6,
                                                                                w * 0.8, h * 0.1, fontSize=64)
    d.scene(1.5).video("short.mp4", 0, h * 0.25, w, w * 9 / 16, mute=True).audio("music.m4a")
    d.loud, d.quiet = [(4.2, 5.3)], [(0.1, 3.9)]
    return d


def twenty_tracks(w: int = 1920, h: int = 1080) -> Doc:
    d = Doc("twenty-tracks", w, h).scene(4, "#000000")
    cell_w, cell_h = w / 4, h / 4
    clips = ["ramp.mp4", "ramp30.mp4", "ramp60.mp4"]
    for i in range(6):
        d.video(clips[i % 3], (i % 4) * cell_w, (i // 4) * cell_h, cell_w, cell_h, startTime=i * 0.3, mute=True)
    colors = list(COLORS)
    for i in range(8):
        d.image(colors[i % len(colors)], ((i + 6) % 4) * cell_w, ((i + 6) // 4) * cell_h, cell_w, cell_h,
                startTime=0.2 * i, duration=2)
    for i in range(4):
        d.box(colors[(i + 2) % len(colors)], (i % 4) * cell_w, 3.5 * cell_h, cell_w * 0.9, cell_h * 0.4,
              f"Track {i + 15}", pad=10, startTime=i * 0.5)
    d.audio("music.m4a", volume=0.3).audio("voice.m4a", startTime=1)
    d.loud = [(0.2, 3.8)]
    return d


def soundtrack_voice(w: int = 640, h: int = 360, fast: bool = False) -> Doc:
    d = Doc("soundtrack-and-voice" + ("-small" if fast else ""), w, h, fast=fast).scene(4)
    d.box("blue", 40, 40, w - 80, h / 4, "Soundtrack and voice")
    d.audio("music.m4a", volume=0.2, fadeIn=0.5).audio("voice.m4a", startTime=1.5)
    d.loud = [(0.6, 3.9)]
    return d


def late_videos(w: int = 1280, h: int = 720, fast: bool = False) -> Doc:
    d = Doc("late-and-overlapping-videos" + ("-small" if fast else ""), w, h, fast=fast).scene(4, "#ffffff")
    d.video("ramp.mp4", 0, 0, w / 2, h / 2, startTime=0.5, duration=2)
    d.video("ramp.mp4", w / 4, h / 4, w / 2, h / 2, startTime=1.5, duration=2, zIndex=1, mute=True)
    d.video("ramp30.mp4", w / 2, h / 2, w / 2, h / 2, startTime=2.5, trimStart=1, zIndex=2)
    d.video("short.mp4", 0, h / 2, w / 4, h / 4, startTime=1, duration=2.5)  # held after its 1 s
    return d


def transparent(kind: str, w: int = 1280, h: int = 720, fast: bool = False) -> Doc:
    d = Doc(f"transparent-{kind}" + ("-small" if fast else ""), w, h, fast=fast).scene(2.5)
    d.image("green", 0, 0, w / 2, h, startTime=0)
    d.video(ALPHA_CLIPS[kind], w / 4, h / 4, w / 2, h / 2, startTime=0.5, zIndex=1)
    d.video(ALPHA_CLIPS[kind], w / 4, h * 0.8, w / 4, h / 8, startTime=1, zIndex=2, transform={"opacity": 0.6})
    return d


def transparent_png_over_video(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("transparent-png-over-video", w, h).scene(3)
    d.video("ramp.mp4", 0, 0, w, h, mute=True)
    d.image("purple", w * 0.6, h * 0.1, w * 0.3, h * 0.3, half=True, startTime=1)
    d.image("yellow", w * 0.1, h * 0.5, w * 0.3, h * 0.3, half=True, transform={"opacity": 0.5})
    return d


def opacity_stack(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("opacity-stack", w, h).scene(2, "#000000")
    for i, opacity in enumerate((0.25, 0.5, 0.75, 1)):
        d.box("white", 40 + i * 300, 100, 260, 200, transform={"opacity": opacity}, startTime=0.2 * i)
    return d


def long_text(fit: str, w: int = 1280, h: int = 720) -> Doc:
    words = "The quick brown fox jumps over the lazy dog while the newsroom prepares tonight's headlines. " * 6
    d = Doc(f"long-text-{fit}", w, h).scene(2)
    d.box("blue", 100, 100, 600, 300, words.strip(), pad=24, textFit=fit, fontSize=48)
    d.text(words.strip(), 760, 100, 420, 500, textFit=fit, fontSize=40, fontFamily="serif")
    return d


def script_text(name: str, text: str, needs: str, **extra) -> Doc:
    d = Doc(f"text-{name}", 1280, 720, needs=needs).scene(2)
    d.box("purple", 100, 100, 1080, 200, text, pad=24, fontSize=72, **extra)
    d.text(text, 100, 380, 1080, 200, fontSize=64, **extra)
    return d


def multi_scene(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("multi-scene-mix", w, h)
    d.scene(1.5).image("red", 100, 100, 300, 200).box("blue", 500, 100, 400, 100, "Intro")
    d.scene(2).video("ramp.mp4", 0, 0, w, h, trimStart=1).audio("music.m4a", volume=0.4)
    d.scene(1, "#ffffff").image("blue", 100, 100, 400, 225, half=True)
    d.scene(0.5, "#ff0000")
    d.loud, d.quiet = [(1.7, 3.3)], [(0.1, 1.3), (3.7, 4.9)]
    return d


def fades(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("fades-everywhere", w, h).scene(4)
    d.video("ramp.mp4", 0, 0, w / 2, h / 2, fadeIn=1, fadeOut=1, volume=1)
    d.image("yellow", w / 2, 0, w / 2, h / 2, startTime=0.5, duration=3, fadeIn=0.5, fadeOut=0.5)
    d.box("green", 0, h / 2, w, h / 4, "Fading caption", startTime=1, fadeIn=1)
    d.loud = [(1.2, 2.8)]
    return d


def many_scenes(w: int = 960, h: int = 540) -> Doc:
    d = Doc("many-short-scenes", w, h, fps=30)
    for i, color in enumerate(COLORS):
        d.scene(0.5).image(color, 100 + i * 20, 100, 400, 225).box("purple", 600, 100, 300, 80, f"#{i}")
    return d


def square_post(w: int = 1080, h: int = 1080) -> Doc:
    d = Doc("square-post", w, h, fps=30).scene(3, "#f0f0f0")
    d.video("ramp60.mp4", 0, 0, w, h * 9 / 16, mute=True)
    d.box("orange", 0, h * 0.6, w, h * 0.15, "50% OFF TODAY")
    d.image("blue", w * 0.8, h * 0.85, w * 0.15, h * 0.1, startTime=1.5)
    return d


def film_rate(fps: int) -> Doc:
    d = Doc(f"rate-{fps}fps-mixed-sources", 1280, 720, fps=fps).scene(3)
    d.video("ramp30.mp4", 0, 0, 640, 360, mute=True).video("ramp60.mp4", 640, 0, 640, 360, startTime=0.5)
    d.video("ramp.mp4", 320, 360, 640, 360, startTime=1, mute=True)
    return d


def looping_background(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("looping-background", w, h).scene(3.5)
    d.video("short.mp4", 0, 0, w, h, role="background")
    d.box("red", 100, 500, 600, 120, "Loop", startTime=1.2)
    return d


def muted_video_mono_voice(w: int = 1280, h: int = 720) -> Doc:
    d = Doc("muted-video-mono-voice", w, h).scene(3)
    d.video("ramp.mp4", 0, 0, w, h, mute=True).audio("voice.m4a", startTime=0.5)
    d.loud, d.quiet = [(0.7, 2.3)], [(0.05, 0.4), (2.7, 2.95)]
    return d


DOCUMENTS: list[Callable[[], Doc]] = [
    lambda: news_intro(640, 360, fast=True), lambda: late_videos(640, 360, fast=True),
    lambda: transparent("vp9-webm", 640, 360, fast=True), lambda: product_ad(40, 640, 360, fast=True),
    lambda: soundtrack_voice(fast=True),
    news_intro, lambda: news_intro(1080, 1920), slideshow, lambda: product_ad(40), lambda: product_ad(100),
    lower_third, portrait_story, twenty_tracks, soundtrack_voice, late_videos,
    *(lambda kind=kind: transparent(kind) for kind in ALPHA_CLIPS), transparent_png_over_video, opacity_stack,
    lambda: long_text("shrink"), lambda: long_text("none"),
    lambda: script_text("arabic", "مرحبا بكم في نشرة الأخبار", "\u0645", textAlign="right"),
    lambda: script_text("hebrew", "שלום וברוכים הבאים לחדשות", "\u05e9", textAlign="right"),
    lambda: script_text("cjk", "欢迎收看今晚的新闻 ニュース 뉴스", "\u4e2d", fontFamily=COVERING_FONT),
    lambda: script_text("emoji", "Sale \U0001F600 \u2764 \u2600 \u2708 today", "\U0001F600"),
    multi_scene, fades, many_scenes, square_post, lambda: film_rate(24), lambda: film_rate(60), looping_background,
    muted_video_mono_voice,
]
