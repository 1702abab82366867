"""Synthetic product photos with their TRUE masks, for measuring the RenderCAD cut-out (renderers/image/matte.py).

Each photo is drawn the way a camera sees it: a backdrop (solid, graded, gradient or textured), the backdrop's own
contact shadow, then the subject's parts, antialiased (drawn at 4x and area-averaged), shaded like solids
(cylinder shading, glossy highlights), sensor noise, and a JPEG round trip (4:2:0, quality 90) — except the
transparent PNG, which is handed over with its own alpha. The truth is the subject's coverage > 0.5; the shadow is
not part of it. Everything is seeded: the same name draws the same bytes. No dependency on renderers/."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SS = 4  # supersampling of the drawn shapes


@dataclass
class Photo:
    name: str
    rgb: np.ndarray  # uint8 (H, W, 3)
    truth: np.ndarray  # bool (H, W): the subject
    alpha: np.ndarray | None = None  # uint8: the upload's own transparency (the PNG input), else None
    dark: bool = False  # the backdrop is dark: the fringe is measured on white, else on black

    @property
    def contrast(self) -> str:
        """A new backdrop that contrasts with the old one (where a fringe of the old colour would show)."""
        return "white" if self.dark else "black"


class Canvas:
    """A photo being drawn: float RGB 0..255, the union of the subject's coverage."""

    def __init__(self, w: int, h: int, seed: int) -> None:
        self.w, self.h = w, h
        self.rng = np.random.default_rng(seed)
        self.img = np.zeros((h, w, 3), np.float32)
        self.cover = np.zeros((h, w), np.float32)

    # backdrops
    def solid(self, color, falloff: float = 0.04) -> Canvas:
        ys = np.linspace(0, 1, self.h, dtype=np.float32)[:, None, None]
        self.img[:] = np.asarray(color, np.float32) * (1 - falloff * ys)
        return self

    def gradient(self, top, bottom) -> Canvas:
        t = np.linspace(0, 1, self.h, dtype=np.float32)[:, None, None]
        self.img[:] = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
        return self

    def texture(self, amount: float = 7.0, scale: int = 40) -> Canvas:
        """A woven/paper-like backdrop texture: smooth blotches plus a fine weave."""
        cells = self.rng.random((max(2, self.h // scale), max(2, self.w // scale))).astype(np.float32)
        blotch = cv2.resize(cells, (self.w, self.h), interpolation=cv2.INTER_CUBIC) - 0.5
        ys, xs = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        weave = np.sin(xs * 1.3) * np.sin(ys * 1.3) * 0.5
        self.img += ((blotch * 1.6 + weave) * amount)[..., None]
        return self

    def shadow(self, cx: float, cy: float, rx: float, ry: float, depth: float, blur: float) -> Canvas:
        """The backdrop's own contact shadow (it darkens the backdrop, keeps its colour)."""
        m = np.zeros((self.h, self.w), np.float32)
        cv2.ellipse(m, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), blur)
        self.img *= (1 - depth * m)[..., None]
        return self

    # subject parts
    def part(self, draw: Callable[[np.ndarray, Callable[[float], int]], None], color, shade: str = "cyl",
             gloss: float = 0.0, grain: float = 0.0) -> Canvas:
        """A part of the subject: its coverage from `draw` (coordinates in photo pixels, scaled by `s`), its
        colour shaded across its bounding box (only that box is computed: outside it the coverage is 0)."""
        big = np.zeros((self.h * SS, self.w * SS), np.uint8)
        draw(big, lambda v: int(round(v * SS)))
        cov = cv2.resize(big, (self.w, self.h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        x, y, bw, bh = cv2.boundingRect((cov > 0).astype(np.uint8))
        box = np.s_[y:y + bh, x:x + bw]
        u = np.clip((np.arange(x, x + bw, dtype=np.float32) - x) / max(bw, 1), 0, 1)[None, :]
        v = np.clip((np.arange(y, y + bh, dtype=np.float32) - y) / max(bh, 1), 0, 1)[:, None]
        if shade == "cyl":
            s = 0.72 + 0.34 * np.sin(np.pi * u) - 0.06 * v
        elif shade == "flat":
            s = 0.95 - 0.08 * v + 0 * u
        else:  # "box": two faces lit differently
            s = np.where(u < 0.6, 0.98, 0.8) - 0.05 * v
        col = np.asarray(color, np.float32) * s[..., None]
        if gloss:
            col += gloss * 255 * np.exp(-((u - 0.3) / 0.06) ** 2)[..., None] * (0.6 + 0.4 * (1 - v))[..., None]
        if grain:
            streak = cv2.resize(self.rng.random((self.h // 3 + 1, 8)).astype(np.float32), (self.w, self.h))
            col *= (1 + grain * (streak[box] - 0.5))[..., None]
        col = np.clip(col, 0, 255)
        c = cov[box][..., None]
        self.img[box] = self.img[box] * (1 - c) + col * c
        self.cover[box] = 1 - (1 - self.cover[box]) * (1 - cov[box])
        return self

    def finish(self, name: str, noise: float = 2.0, jpeg: bool = True, dark: bool = False) -> Photo:
        img = self.img + self.rng.normal(0, noise, self.img.shape).astype(np.float32)
        rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        if jpeg:
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return Photo(name, rgb, self.cover > 0.5, None, dark)


# drawing helpers: each returns a draw(big, s) function
def ellipse(cx, cy, rx, ry, angle=0.0, hole=None):
    def draw(big, s):
        cv2.ellipse(big, (s(cx), s(cy)), (s(rx), s(ry)), angle, 0, 360, 255, -1)
        if hole:
            hx, hy, hrx, hry = hole
            cv2.ellipse(big, (s(hx), s(hy)), (s(hrx), s(hry)), angle, 0, 360, 0, -1)
    return draw


def poly(*pts):
    def draw(big, s):
        cv2.fillPoly(big, [np.array([(s(x), s(y)) for x, y in pts], np.int32)], 255)
    return draw


def rect(x0, y0, x1, y1):
    return poly((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def bar(x0, y0, x1, y1, width):
    """A straight thin part (a leg, a stem, a wire) of `width` pixels."""
    d = np.array([x1 - x0, y1 - y0], np.float64)
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6) * width / 2
    return poly((x0 + n[0], y0 + n[1]), (x1 + n[0], y1 + n[1]), (x1 - n[0], y1 - n[1]), (x0 - n[0], y0 - n[1]))


def ring(cx, cy, r_out, r_in, ry_scale=1.0):
    return ellipse(cx, cy, r_out, r_out * ry_scale, hole=(cx, cy, r_in, r_in * ry_scale))


def arc(cx, cy, rx, ry, start, end, width):
    def draw(big, s):
        cv2.ellipse(big, (s(cx), s(cy)), (s(rx), s(ry)), 0, start, end, 255, s(width))
    return draw


OFF_WHITE, WHITE, GREY, CHARCOAL = (236, 232, 224), (248, 248, 247), (200, 200, 198), (52, 52, 55)


def mug() -> Photo:
    c = Canvas(1200, 900, 1).solid(OFF_WHITE).shadow(560, 700, 200, 28, 0.45, 18)
    c.part(arc(760, 470, 110, 130, -90, 90, 38), (250, 250, 252))  # the handle: a hole inside
    c.part(poly((380, 250), (720, 250), (705, 700), (395, 700)), (250, 250, 252), gloss=0.05)
    return c.finish("mug-white-on-off-white")


def stool() -> Photo:
    c = Canvas(1000, 1100, 2).solid(GREY).shadow(500, 960, 260, 20, 0.4, 14)
    wood = (150, 98, 52)
    c.part(ellipse(500, 300, 240, 46), wood, grain=0.25)
    for x0, x1 in ((300, 250), (420, 400), (580, 600), (700, 750)):
        c.part(bar(x0, 320, x1, 960, 6), wood, shade="flat")
    c.part(bar(270, 720, 730, 720, 6), wood, shade="flat")
    return c.finish("stool-thin-legs")


def ring_photo() -> Photo:
    c = Canvas(1000, 800, 3).solid(WHITE).shadow(500, 640, 240, 22, 0.3, 16)
    c.part(ellipse(500, 400, 260, 240, hole=(500, 400, 150, 135)), (40, 90, 200), gloss=0.3)
    return c.finish("blue-ring-with-hole")


def lamp() -> Photo:
    c = Canvas(900, 1200, 4).gradient((232, 234, 238), (150, 152, 158)).shadow(450, 1060, 170, 16, 0.4, 12)
    black = (22, 22, 24)
    c.part(poly((300, 200), (600, 200), (680, 420), (220, 420)), black, gloss=0.12)
    c.part(bar(450, 420, 450, 1030, 5), black, shade="flat")
    c.part(ellipse(450, 1040, 150, 22), black, gloss=0.1)
    return c.finish("black-lamp-thin-stem-on-gradient")


def bottle() -> Photo:
    c = Canvas(800, 1200, 5).solid((214, 214, 212)).shadow(400, 1050, 150, 18, 0.4, 14)
    c.part(poly((350, 140), (450, 140), (450, 360), (540, 470), (540, 1050), (260, 1050), (260, 470),
                (350, 360)), (30, 110, 60), gloss=0.35)
    return c.finish("green-bottle-glossy")


def box_cut() -> Photo:
    c = Canvas(1200, 900, 6).solid((225, 228, 232))
    c.part(poly((500, 300), (1250, 250), (1250, 950), (460, 950)), (176, 132, 84), shade="box")
    return c.finish("box-cut-by-frame")


def speaker() -> Photo:
    c = Canvas(1000, 1000, 7).solid(CHARCOAL).shadow(500, 880, 230, 18, 0.5, 14)
    c.part(rect(300, 150, 700, 880), (16, 16, 18), shade="box")
    c.part(ring(500, 620, 130, 122), (70, 70, 74), shade="flat")
    return c.finish("black-speaker-on-charcoal", dark=True)


def vase_white() -> Photo:
    c = Canvas(900, 1100, 8).solid(WHITE, 0.02).shadow(450, 960, 170, 20, 0.3, 16)
    c.part(poly((380, 180), (520, 180), (520, 300), (640, 520), (600, 960), (300, 960), (260, 520), (380, 300)),
           (244, 244, 244))
    return c.finish("white-vase-on-white")


def ball() -> Photo:
    c = Canvas(1000, 1000, 9).solid((205, 208, 212)).shadow(500, 800, 240, 24, 0.55, 10)
    c.part(ellipse(500, 520, 280, 280), (200, 30, 40), gloss=0.6)
    return c.finish("red-ball-specular-strong-shadow")


def chair() -> Photo:
    c = Canvas(1000, 1300, 10).gradient((240, 238, 232), (196, 192, 186)).shadow(500, 1160, 260, 20, 0.35, 18)
    wood = (110, 70, 40)
    for x in (320, 400, 480, 560, 640):  # slats: holes between them
        c.part(bar(x, 150, x, 560, 18), wood, shade="flat")
    c.part(bar(290, 150, 690, 150, 26), wood, shade="flat")
    c.part(poly((280, 560), (720, 560), (740, 640), (260, 640)), wood, grain=0.2)
    for x0, x1 in ((290, 270), (700, 720), (360, 350), (640, 650)):
        c.part(bar(x0, 640, x1, 1160, 8), wood, shade="flat")
    return c.finish("chair-slats-and-legs")


def headphones() -> Photo:
    c = Canvas(1100, 1000, 11).solid(OFF_WHITE).shadow(550, 830, 300, 22, 0.6, 7)
    black = (26, 26, 28)
    c.part(arc(550, 520, 280, 330, 180, 360, 34), black, shade="flat")
    for x in (290, 810):
        c.part(ellipse(x, 640, 80, 150), black, gloss=0.15)
    return c.finish("headphones-strong-shadow")


def sneaker_textured() -> Photo:
    c = Canvas(1200, 900, 12).solid((214, 200, 178)).texture(6).shadow(600, 690, 340, 24, 0.4, 16)
    c.part(poly((250, 690), (250, 500), (420, 380), (600, 420), (820, 560), (980, 600), (980, 690)), (240, 200, 30))
    c.part(rect(250, 660, 980, 700), (245, 245, 240), shade="flat")
    return c.finish("yellow-shoe-on-textured-linen")


def scissors() -> Photo:
    c = Canvas(1100, 900, 13).solid((222, 226, 230)).shadow(550, 720, 300, 16, 0.3, 12)
    orange = (235, 120, 30)
    c.part(ring(330, 380, 110, 70, 0.8), orange, shade="flat")
    c.part(ring(330, 600, 110, 70, 0.8), orange, shade="flat")
    c.part(poly((420, 400), (1000, 470), (1000, 490), (430, 520)), (170, 172, 178), gloss=0.2)
    c.part(poly((420, 580), (1000, 510), (1000, 530), (430, 470)), (160, 162, 168), gloss=0.2)
    return c.finish("scissors-two-loops")


def kettle_png() -> Photo:
    c = Canvas(1000, 900, 14)
    c.img[:] = 0  # a cut-out's clear pixels hold whatever the exporter left: black here
    c.part(arc(690, 450, 90, 140, -80, 80, 30), (20, 150, 150))
    c.part(poly((300, 250), (640, 250), (690, 720), (260, 720)), (20, 160, 160), gloss=0.25)
    c.part(poly((260, 320), (150, 260), (140, 280), (270, 380)), (20, 150, 150), shade="flat")
    photo = c.finish("teal-kettle-transparent-png", noise=1.0, jpeg=False, dark=True)
    feathered = cv2.GaussianBlur(c.cover, (0, 0), 1.0)  # an exporter's soft edge, over the black clear pixels
    photo.alpha = np.clip(feathered * 255 + 0.5, 0, 255).astype(np.uint8)
    photo.rgb = np.where(photo.alpha[..., None] > 0, photo.rgb, 0).astype(np.uint8)
    return photo


def black_bottle() -> Photo:
    c = Canvas(800, 1200, 15).solid(WHITE, 0.02).shadow(400, 1060, 190, 16, 0.65, 6)
    c.part(poly((360, 120), (440, 120), (440, 330), (530, 430), (530, 1060), (270, 1060), (270, 430),
                (360, 330)), (14, 14, 16), gloss=0.5)
    return c.finish("black-glossy-bottle-hard-shadow")


def plant() -> Photo:
    c = Canvas(1000, 1100, 16).solid(WHITE, 0.03).shadow(500, 960, 160, 16, 0.4, 12)
    green = (50, 130, 50)
    for angle in (-50, -25, 0, 20, 45):
        a = np.radians(angle)
        c.part(bar(500, 640, 500 + 330 * np.sin(a), 640 - 380 * np.cos(a), 5), green, shade="flat")
        c.part(ellipse(500 + 330 * np.sin(a), 640 - 380 * np.cos(a), 34, 16, angle + 90), green)
    c.part(poly((380, 640), (620, 640), (590, 960), (410, 960)), (190, 90, 60))
    return c.finish("plant-thin-stems")


def racket() -> Photo:
    c = Canvas(900, 1300, 17).solid((196, 214, 236)).shadow(450, 1200, 120, 14, 0.35, 12)
    c.part(ring(450, 430, 250, 226, 1.25), (220, 40, 90), shade="flat")
    c.part(bar(450, 735, 450, 1200, 30), (30, 30, 34), shade="cyl")
    c.part(bar(430, 690, 450, 780, 14), (220, 40, 90), shade="flat")
    c.part(bar(470, 690, 450, 780, 14), (220, 40, 90), shade="flat")
    return c.finish("racket-frame-on-pale-blue")


def sneaker_white() -> Photo:
    c = Canvas(1200, 800, 18).solid(OFF_WHITE).shadow(600, 620, 360, 20, 0.35, 14)
    c.part(poly((220, 620), (230, 420), (420, 330), (620, 380), (860, 500), (990, 540), (990, 620)),
           (251, 251, 253))
    c.part(rect(220, 590, 990, 625), (228, 228, 230), shade="flat")
    return c.finish("white-shoe-on-off-white")


def chrome_kettle() -> Photo:
    c = Canvas(1000, 1000, 19).gradient((205, 207, 210), (160, 162, 166)).shadow(500, 840, 250, 20, 0.4, 14)
    c.part(arc(720, 520, 90, 160, -90, 90, 26), (150, 152, 156), shade="flat")
    c.part(ellipse(500, 580, 230, 260), (185, 188, 192), gloss=0.35)
    c.part(rect(470, 290, 530, 330), (60, 60, 64), shade="flat")
    return c.finish("chrome-kettle-on-grey-gradient")


def desk_lamp() -> Photo:
    c = Canvas(1000, 1100, 20).solid(OFF_WHITE).shadow(420, 980, 160, 16, 0.4, 12)
    red = (200, 40, 40)
    c.part(ellipse(420, 985, 140, 22), red)
    c.part(bar(420, 980, 300, 560, 6), red, shade="flat")
    c.part(bar(300, 560, 640, 300, 6), red, shade="flat")
    c.part(poly((600, 260), (720, 230), (820, 420), (660, 470)), red, gloss=0.15)
    return c.finish("desk-lamp-thin-arms")


def hanger() -> Photo:
    c = Canvas(1100, 800, 21).solid(WHITE, 0.02)
    grey = (90, 92, 96)
    c.part(bar(150, 620, 550, 300, 5), grey, shade="flat")
    c.part(bar(550, 300, 950, 620, 5), grey, shade="flat")
    c.part(bar(150, 620, 950, 620, 5), grey, shade="flat")
    c.part(arc(550, 240, 45, 60, 180, 450, 5), grey, shade="flat")
    return c.finish("wire-hanger")


def camera_black() -> Photo:
    c = Canvas(1100, 900, 22).solid((30, 30, 32)).shadow(550, 700, 330, 16, 0.5, 12)
    c.part(rect(230, 300, 870, 700), (13, 13, 14), shade="box")
    c.part(ring(600, 500, 170, 150), (80, 80, 84), shade="flat")
    c.part(ellipse(600, 500, 150, 150), (8, 8, 10), gloss=0.2)
    return c.finish("black-camera-on-black", dark=True)


def tote_blue() -> Photo:
    c = Canvas(1000, 1100, 23).solid((236, 196, 160)).shadow(500, 990, 240, 18, 0.4, 14)
    c.part(arc(500, 420, 150, 200, 180, 360, 22), (30, 60, 150), shade="flat")
    c.part(poly((280, 420), (720, 420), (760, 990), (240, 990)), (34, 66, 160), grain=0.1)
    return c.finish("blue-tote-handle-on-peach")


GENERATORS = [mug, stool, ring_photo, lamp, bottle, box_cut, speaker, vase_white, ball, chair, headphones,
              sneaker_textured, scissors, kettle_png, black_bottle, plant, racket, sneaker_white, chrome_kettle,
              desk_lamp, hanger, camera_black, tote_blue]


def photos(names: list[str] | None = None) -> list[Photo]:
    return [p for p in (g() for g in GENERATORS) if names is None or p.name in names]
