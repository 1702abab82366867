"""When splitting a Manim scene wins: a calibrated cost model of a render, whole and in animation ranges.

A whole render is two pipelined workers: the main thread draws each frame (cairo, and Python around it: one
core at most) while x264 encodes the frames on threads of its own (as many cores as it is given). Encoding is
most of the CPU (about 70 % at 1280x720), so a whole render already uses 2 cores: on c free cores it takes

    whole(c) = START_S + max(D, (D + E) / c)          D, E: the scene's draw and encode CPU seconds

A split render on k ranges shares the c cores among them (c / k each): the plan task fast-forwards every
animation, each range task starts, fast-forwards the animations before it (REPLAY_S each) and draws and encodes
its own frames, and the assemble task joins the segments:

    split(c, k) = plan + 2 HOP_S + max over ranges [START_S + REPLAY_S * before + span(range, c / k)] + ASSEMBLE_S
    plan = START_S + REPLAY_S * animations;  span(work, cores) = max(D_work / min(1, cores), (D + E)_work / cores)

A scene is split (into the k in 2..workers that the model likes best) only when split(c, k) < MARGIN * whole(c).
So on 2 cores a scene is never split (the encoder already fills both), and on 4 or more free cores a long scene
is. The model is deterministic: its inputs are the frames each animation draws (counted by the plan task), the
frame size and the free CPU slots at submit, never a clock, so the plan (and every range's cache key) is a
function of the task's input alone.

Draw and encode costs per frame are a fixed part plus a part per megapixel, and a frozen frame (a static wait,
written as repeats of one frame) draws nothing and encodes at FROZEN_ENCODE of a frame's cost. The scene's own
complexity is not in the model: a scene of many more mobjects than the calibration scene draws slower than the
model assumes, so the model underrates what splitting it would gain (it errs towards rendering whole).

Calibration (``.venv/bin/python -m tests.bench.split_calibrate``, on the 2-core reference box, 2026-12-07):
CPU seconds of tasks forked from a process that has imported Manim, for the 24-animation scene of ``make bench``'s
split section at 1280x720 and 640x360, drawn with and without the encoder. The constants are the first run's; a
second run (load average 5 from other work both times) gave draw 4.48 / 3.92 ms a frame at 1280x720 / 640x360
(first: 4.76 / 3.29), encode 13.78 / 3.49 ms (11.72 / 3.72), replay 6.84 ms an animation (6.76), a frozen frame
0.345 of an encode: the split between the fixed and the per-megapixel parts moves, a frame's total at 1280x720 by
11 %, and no decision the model makes on 2 or 16 cores. START_S, HOP_S and ASSEMBLE_S are wall
times of the appliance's own tasks (the sandbox, the verifier, the scheduler more than CPU work): the medians
``make bench``'s split section printed on a quieter moment of the same box (task start 0.18 s, assemble 0.22 s,
hops 0.00 s), rounded up.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

START_S = 0.20  # a task: the fork of the warm worker, the sandbox, the scene code, Scene(), verifying outputs
HOP_S = 0.02  # the scheduler's hop between dependent tasks
ASSEMBLE_S = 0.25  # the assemble task: start, concat by stream copy, verify
REPLAY_S = 0.0068  # per animation fast-forwarded (nothing drawn): measured 0.0068
DRAW_S_FRAME = 0.0028  # drawing a frame: the fixed part (measured 0.00280)
DRAW_S_MPX = 0.0021  # ... and per megapixel (measured 0.00213)
ENCODE_S_FRAME = 0.0010  # encoding a frame (x264, CPU seconds over its threads): fixed (measured 0.00105)
ENCODE_S_MPX = 0.0116  # ... and per megapixel (measured 0.01157)
FROZEN_ENCODE = 0.35  # a repeated frame costs this share of an encode, and no draw (measured 0.345)
MARGIN = 0.9  # split only where the model predicts at least a 10 % shorter render


@dataclass(frozen=True)
class Work:
    """CPU seconds of one animation: drawing its frames, encoding them."""
    draw: float
    encode: float

    @property
    def total(self) -> float:
        return self.draw + self.encode


@dataclass(frozen=True)
class Decision:
    ranges: list[tuple[int, int]]  # [start, stop) animation ranges; one range: render whole
    whole_s: float  # predicted seconds, whole, on the free cores
    split_s: float | None  # predicted seconds of the chosen split (None: no split was possible)


def frame_work(width: int, height: int) -> Work:
    mpx = width * height / 1e6
    return Work(DRAW_S_FRAME + DRAW_S_MPX * mpx, ENCODE_S_FRAME + ENCODE_S_MPX * mpx)


def animation_work(plays: Sequence[tuple[int, bool]], width: int, height: int) -> list[Work]:
    """Per animation (frames, frozen frame), its draw and encode CPU seconds."""
    frame = frame_work(width, height)
    return [Work(0.0 if frozen else frames * frame.draw, frames * frame.encode * (FROZEN_ENCODE if frozen else 1))
            for frames, frozen in plays]


def span(work: Sequence[Work], cores: float) -> float:
    """Drawing and encoding ``work`` on ``cores`` cores: drawing is one thread, encoding spreads."""
    draw, total = sum(w.draw for w in work), sum(w.total for w in work)
    return max(draw / min(1.0, cores), total / cores) if cores > 0 else float("inf")


def whole_s(work: Sequence[Work], cores: float) -> float:
    """A whole render on ``cores`` cores (fewer than 1: a share of a busy box, as the bench fits it)."""
    return START_S + span(work, cores)


def plan_s(animations: int) -> float:
    return START_S + REPLAY_S * animations


def range_s(work: Sequence[Work], start: int, stop: int, cores: float) -> float:
    return START_S + REPLAY_S * start + span(work[start:stop], cores)


def split_s(work: Sequence[Work], ranges: Sequence[tuple[int, int]], cores: float) -> float:
    share = cores / len(ranges)
    return (plan_s(len(work)) + 2 * HOP_S + max(range_s(work, a, b, share) for a, b in ranges) + ASSEMBLE_S)


def may_win(width: int, height: int, workers: int, cores: float) -> bool:
    """Whether any long scene of this frame size could gain from a split on ``cores`` free cores: the model in
    the limit of many frames, where the plan, starts and assembly weigh nothing. False on 2 cores: the encoder
    already uses both. Asked at submit, before anything is known of the scene but its source."""
    frame = frame_work(width, height)
    cores = max(1.0, cores)
    best = min((span([frame], cores / k) / k for k in range(2, max(2, workers) + 1)), default=float("inf"))
    return best < MARGIN * span([frame], cores)
