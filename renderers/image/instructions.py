"""`custom_instructions`, read for a documented vocabulary of photographic words.

There is no generative model on the appliance, so free text cannot be followed. Instead a fixed list of words
and phrases (README: "custom_instructions") moves the finishing pipeline's own parameters; everything else in
the text is ignored, and `parse` says exactly which phrases it recognised so nothing false is reported.

Rules are tried in order and each match is blanked out of the text, so a negated phrase ("no shadow") listed
before its positive form ("shadow") is never read twice. Each rule counts once however often it appears."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

MAX_LEN = 1500


@dataclass
class Adjust:
    """The parameters the vocabulary moves; the defaults change nothing. Steps are small integers."""

    temperature: int = 0  # + warmer, - cooler (white balance of the subject)
    exposure: int = 0  # + brighter, - darker
    contrast: int = 0  # + punchier tone curve, - flatter
    saturation: int = 0  # + more colour, - less; -3 is black and white
    sharpen: int = 0  # + crisper, - no sharpening
    fit: int = 0  # + the subject larger in the frame, - smaller
    vignette: bool | None = None  # None: the model's default (pro on generated backdrops)
    grain: bool | None = None  # None: the model's default (pro)
    shadow: str | None = None  # none | soft | hard; None: the default shadows
    applied: list[str] = field(default_factory=list)

    def params(self) -> dict:
        """The non-default parameters (what goes into the task, and its cache key)."""
        default = Adjust()
        return {k: v for k, v in asdict(self).items() if k != "applied" and v != getattr(default, k)}

    @classmethod
    def from_params(cls, params: dict | None) -> Adjust:
        known = {k: v for k, v in (params or {}).items() if k in cls.__dataclass_fields__ and k != "applied"}
        return cls(**known)


# (label reported back, pattern, parameter, value). Integers add (clamped to ±2); others set.
RULES: list[tuple[str, str, str, object]] = [
    ("no shadow", r"\b(?:no|without(?: a| any)?) (?:drop |cast )?shadows?\b|\bshadowless\b", "shadow", "none"),
    ("soft shadow", r"\bsoft(?:er)? shadows?\b", "shadow", "soft"),
    ("hard shadow", r"\b(?:hard|harder|strong|stronger|dramatic|deep|deeper) shadows?\b", "shadow", "hard"),
    ("no vignette", r"\b(?:no|without(?: a)?) vignett(?:e|ing)\b", "vignette", False),
    ("vignette", r"\bvignett(?:e|ed|ing)\b", "vignette", True),
    ("no grain", r"\b(?:no|without) (?:film )?grain\b", "grain", False),
    ("grain", r"\b(?:film )?grain(?:y)?\b", "grain", True),
    ("no sharpening", r"\bno sharpen(?:ing)?\b|\bsoft focus\b", "sharpen", -1),
    ("sharp", r"\bsharp(?:er|en|ened)?\b|\bcrisp(?:er)?\b", "sharpen", 1),
    ("black and white", r"\bblack (?:and|&) white\b|\bb&w\b|\bmonochrome\b|\bgr[ae]yscale\b", "saturation", -3),
    ("high contrast", r"\bhigh(?:er)?[- ]contrast\b|\bmore contrast\b|\bcontrasty\b|\bpunchy\b", "contrast", 1),
    ("low contrast", r"\blow(?:er)?[- ]contrast\b|\bless contrast\b|\bflat(?:ter)?\b", "contrast", -1),
    ("soft", r"\bsoft(?:er)?\b", "contrast", -1),
    ("warm", r"\bwarm(?:er|th)?\b|\bgolden\b", "temperature", 1),
    ("cool", r"\bcool(?:er)?\b|\bcold(?:er)?\b", "temperature", -1),
    ("bright", r"\bbright(?:er|en)?\b|\blight(?:er|en)\b|\bairy\b", "exposure", 1),
    ("dark", r"\bdark(?:er|en)?\b|\bmoody\b|\bdim(?:mer)?\b", "exposure", -1),
    ("vivid", r"\bvivid\b|\bvibrant\b|\bsaturated\b|\bcolou?rful\b", "saturation", 1),
    ("muted", r"\bmuted\b|\bdesaturated?\b|\bwashed[- ]out\b|\bpastel\b", "saturation", -1),
    ("larger", r"\b(?:bigger|larger|closer|zoom(?:ed)? in|fill(?:s|ing)? the frame)\b", "fit", 1),
    ("smaller", r"\b(?:smaller|zoom(?:ed)? out|more (?:space|room|padding)|further away)\b", "fit", -1),
]
_COMPILED = [(label, re.compile(pattern), name, value) for label, pattern, name, value in RULES]


def parse(text: str | None) -> Adjust:
    """The adjustments named in `text` (case-insensitive); an empty Adjust when none are."""
    adjust = Adjust()
    rest = (text or "")[:MAX_LEN].lower()
    for label, pattern, name, value in _COMPILED:
        if not pattern.search(rest):
            continue
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)
        if isinstance(value, int) and not isinstance(value, bool):
            current = getattr(adjust, name)
            mono = value == -3 or current == -3  # black and white stays black and white
            setattr(adjust, name, -3 if mono else max(-2, min(2, current + value)))
        else:
            setattr(adjust, name, value)
        adjust.applied.append(label)
    return adjust
