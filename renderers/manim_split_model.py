"""When splitting a Manim scene wins: a calibrated cost model of a render, whole and in animation ranges.

A whole render is two pipelined workers: the main thread draws each frame (cairo, and Python around it: one
core at most) while x264 encodes the frames on threads of its own. Encoding is most of the CPU (about 70 % at
1280x720), yet one render does not fill two cores: the encoder's threads wait on the drawing thread, on the
Python thread that converts and muxes each frame, and on each other, so a render keeps about PARALLELISM cores
busy however many are free (measured: its CPU seconds over its wall seconds on an idle box). A task in the
appliance also costs more than a bare render (the sandbox, the live frame, the checks of its outputs: OVERHEAD,
the appliance's task time over a bare render's). Several renders at once share the box's c cores, and
together they get less than c cores' worth of work done (SHARED: caches, memory bandwidth, the hypervisor; the
solo CPU seconds of renders run side by side over their wall seconds and c). On c free cores:

    whole(c) = START_S + span(D, E, c, 1)          D, E: the scene's draw and encode CPU seconds
    span(D, E, c, n) = OVERHEAD * max(D / min(1, c / n), (D + E) / min(PARALLELISM, c / n * (SHARED if n > 1 else 1)))

A split render on k ranges shares the c cores among them (n = k renders at once): the plan task fast-forwards every
animation, each range task starts, fast-forwards the animations before it (REPLAY_S each) and draws and encodes
its own frames, and the assemble task joins the segments:

    split(c, k) = plan + 2 HOP_S + max over ranges [START_S + REPLAY_S * before + span(range, c, k)] + ASSEMBLE_S
    plan = START_S + REPLAY_S * animations

A scene is split (into the k in 2..workers that the model likes best) only when split(c, k) < MARGIN * whole(c).
Because one render keeps only PARALLELISM cores busy, two ranges on 2 cores can use the second core better
than one render does, by as much as 2 * SHARED / PARALLELISM; the margin asks for a predicted gain of a fifth
before a split is worth its plan task, its assembly and its extra tasks.
The model is deterministic: its inputs are the frames each animation draws (counted by the plan task), the
frame size and the free CPU slots at submit, never a clock, so the plan (and every range's cache key) is a
function of the task's input alone.

Draw and encode costs per frame are a fixed part plus a part per megapixel, and a frozen frame (a static wait,
written as repeats of one frame) draws nothing and encodes at FROZEN_ENCODE of a frame's cost. The scene's own
complexity is not in the model: a scene of many more mobjects than the calibration scene draws slower than the
model assumes, so the model underrates what splitting it would gain (it errs towards rendering whole).

Calibration (``.venv/bin/python -m tests.bench.split_calibrate``, on the 2-core reference box, 2026-12-07 12:35,
the box otherwise idle): CPU seconds of tasks forked from a process that has imported Manim, for the 24-animation
scene of ``make bench``'s split section at 1280x720 and 640x360, drawn with and without the encoder (draw 5.92 /
4.03 ms a frame, encode 14.76 / 4.39 ms); PARALLELISM, SHARED and OVERHEAD from wall times of the same scene whole
on both cores (4.89 s wall, 7.52 s CPU), as two halves side by side (4.08 s wall, each alone 3.77 s CPU) and
through the appliance (4.84 s against the bare 4.89 s). An earlier run under a load average of 5 gave frame costs
up to 25 % lower and a replay a third cheaper: CPU seconds per frame move with the box's state, and the margin
absorbs that. What the constants decide: on 2 cores a 1280x720 render is never split (two ranges side by side
are predicted 16 % faster in the limit of many frames, under the margin; measured before this calibration: 0.94x,
slower), on 3 or more cores long scenes are. START_S, HOP_S and ASSEMBLE_S are wall times of the appliance's own
tasks (the sandbox, the verifier, the scheduler more than CPU work): the medians ``make bench``'s split section
printed on a quieter moment of the same box (task start 0.18 s, assemble 0.22 s, hops 0.00 s), rounded up.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

START_S = 0.20  # a task: the fork of the warm worker, the sandbox, the scene code, Scene(), verifying outputs
HOP_S = 0.02  # the scheduler's hop between dependent tasks
ASSEMBLE_S = 0.25  # the assemble task: start, concat by stream copy, verify
REPLAY_S = 0.0105  # per animation fast-forwarded (nothing drawn): measured 0.01051
DRAW_S_FRAME = 0.0034  # drawing a frame: the fixed part (measured 0.00340)
DRAW_S_MPX = 0.0027  # ... and per megapixel (measured 0.00274)
ENCODE_S_FRAME = 0.0009  # encoding a frame (x264, CPU seconds over its threads): fixed (measured 0.00094)
ENCODE_S_MPX = 0.0150  # ... and per megapixel (measured 0.01499)
FROZEN_ENCODE = 0.43  # a repeated frame costs this share of an encode, and no draw (measured 0.432)
PARALLELISM = 1.55  # cores one render keeps busy, however many are free (measured 1.554 on 2 idle cores)
OVERHEAD = 1.0  # an appliance task's time over a bare render's (measured 0.989: the sandbox costs start-up only)
SHARED = 0.92  # the share of a core each of several renders at once gets per core it is given (measured 0.923)
MARGIN = 0.8  # split only where the model predicts at least a 20 % shorter render


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


def span(work: Sequence[Work], cores: float, renders: int = 1) -> float:
    """Drawing and encoding ``work`` as one of ``renders`` renders sharing ``cores`` cores: drawing is one
    thread, a render keeps at most PARALLELISM cores busy, and renders side by side get SHARED of theirs."""
    draw, total = sum(w.draw for w in work), sum(w.total for w in work)
    if cores <= 0:
        return float("inf")
    share = cores / renders
    return OVERHEAD * max(draw / min(1.0, share), total / min(PARALLELISM, share * (SHARED if renders > 1 else 1)))


def whole_s(work: Sequence[Work], cores: float) -> float:
    """A whole render on ``cores`` cores (fewer than 1: a share of a busy box, as the bench fits it)."""
    return START_S + span(work, cores)


def plan_s(animations: int) -> float:
    return START_S + REPLAY_S * animations


def range_s(work: Sequence[Work], start: int, stop: int, cores: float, renders: int) -> float:
    return START_S + REPLAY_S * start + span(work[start:stop], cores, renders)


def split_s(work: Sequence[Work], ranges: Sequence[tuple[int, int]], cores: float) -> float:
    longest = max(range_s(work, a, b, cores, len(ranges)) for a, b in ranges)
    return plan_s(len(work)) + 2 * HOP_S + longest + ASSEMBLE_S


def may_win(width: int, height: int, workers: int, cores: float) -> bool:
    """Whether any long scene of this frame size could gain from a split on ``cores`` free cores: the model in
    the limit of many frames, where the plan, starts and assembly weigh nothing. Asked at submit, before
    anything is known of the scene but its source."""
    frame = frame_work(width, height)
    cores = max(1.0, cores)
    best = min((span([frame], cores, k) / k for k in range(2, max(2, workers) + 1)), default=float("inf"))
    return best < MARGIN * span([frame], cores)
