"""Prompt -> camera plan: the camera language people write, turned into timed segments.

A plan is a list of segments played in order across the clip ("slow push in, then pan
right" is two). Each segment holds signed moves on these axes:

    zoom     + in (push in, dolly in)        - out (pull back, dolly out)
    x        + camera right (pan/truck right) - left
    y        + camera down (tilt/pedestal down) - up
    roll     + picture turns clockwise        - counter-clockwise
    orbit    + arc right                      - arc left
    vertigo  dolly zoom: the centre holds, the surroundings stretch
    shake    handheld wobble (applies to the whole clip)
    static   a held, locked-off shot

``negative_prompt`` removes axes ("zoom" there means no zoom of any kind).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

AXES = ("zoom", "x", "y", "roll", "orbit", "vertigo", "shake")

# (pattern, axis, sign). Order matters: longer phrases first.
_D = r"(?:s|es|ing|ed)?"
MOVES: list[tuple[str, str, int]] = [
    (rf"\bdolly[ -]zoom{_D}\b|\bvertigo\b|\bzolly\b|\bcontra[ -]zoom\b", "vertigo", 1),
    (rf"\b(?:zoom{_D}|push{_D}|dolly{_D}|dollie[sd]|mov(?:e|es|ing)|clos(?:e|es|ing)|track{_D}) (?:slowly |quickly |gently |rapidly )?(?:in|forward|closer)\b", "zoom", 1),
    (rf"\bpush[ -]in\b|\bcloser\b", "zoom", 1),
    (rf"\b(?:zoom{_D}|pull{_D}|dolly{_D}|dollie[sd]|mov(?:e|es|ing)|track{_D}) (?:slowly |quickly |gently |rapidly )?(?:out|back|away)\b|\bpull[ -]?back\b|\bwiden{_D}\b", "zoom", -1),
    (rf"\b(?:pan{_D}|panning|truck{_D}|track{_D}|crab{_D}|slid(?:e|es|ing)) (?:slowly |quickly |gently |rapidly )?(?:to (?:the )?)?right\b", "x", 1),
    (rf"\b(?:pan{_D}|panning|truck{_D}|track{_D}|crab{_D}|slid(?:e|es|ing)) (?:slowly |quickly |gently |rapidly )?(?:to (?:the )?)?left\b", "x", -1),
    (rf"\b(?:tilt{_D}|pedestal{_D}|crane{_D}|craning|boom{_D}|ris(?:e|es|ing)|rais(?:e|es|ing)) (?:slowly |quickly |gently |rapidly )?up(?:ward|wards)?\b", "y", -1),
    (rf"\b(?:tilt{_D}|pedestal{_D}|crane{_D}|craning|boom{_D}|lower{_D}|descend{_D}|drop{_D}) (?:slowly |quickly |gently |rapidly )?down(?:ward|wards)?\b", "y", 1),
    (rf"\b(?:orbit{_D}|arc{_D}|circl(?:e|es|ing)) (?:around )?(?:the subject )?(?:to (?:the )?)?left\b", "orbit", -1),
    (rf"\b(?:orbit{_D}|arc{_D}|circl(?:e|es|ing))(?: (?:around )?(?:the subject )?(?:to (?:the )?)?right)?\b", "orbit", 1),
    (rf"\broll{_D} (?:counter[ -]?clockwise|anti[ -]?clockwise|left)\b", "roll", -1),
    (rf"\broll{_D}(?: clockwise| right)?\b|\bdutch (?:angle|tilt)\b", "roll", 1),
    (rf"\bhand[ -]?held\b|\bshak(?:y|e|ing)\b|\bjitter(?:y)?\b|\bwobbl(?:y|e|ing)\b", "shake", 1),
    (rf"\bstatic\b|\blocked[ -]off\b|\bstill camera\b|\bstationary\b|\btripod\b|\bno camera (?:movement|motion)\b", "static", 1),
    (rf"\bzoom{_D}\b", "zoom", 1),
    (rf"\bpan{_D}\b|\bpanning\b", "x", 1),
    (rf"\btilt{_D}\b", "y", -1),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), axis, sign) for p, axis, sign in MOVES]

SLOW = re.compile(r"\b(?:slow(?:ly)?|gentl[ey]|subtl[ey]|subtly|gradual(?:ly)?|soft(?:ly)?|calm(?:ly)?)\b", re.I)
FAST = re.compile(r"\b(?:fast|quick(?:ly)?|rapid(?:ly)?|swift(?:ly)?|whip|dramatic(?:ally)?)\b", re.I)
SPEEDS = {"slow": 0.5, "normal": 1.0, "fast": 2.0}

# A new segment starts at sentence punctuation, a comma, or a sequencing word.
SPLIT = re.compile(r"[.;,!?]+|\b(?:and then|then|after that|afterwards|next|finally|followed by|before|later)\b", re.I)
FIRST = re.compile(r"\bfirst(?:ly)?\b", re.I)

NEGATIVE_WORDS = {
    "zoom": r"zoom|push|pull|dolly",
    "x": r"\bpan|truck|track|crab",
    "y": r"tilt|pedestal|crane|boom",
    "orbit": r"orbit|\barc",
    "roll": r"\broll|rotat",
    "shake": r"shak|hand[ -]?held|jitter|wobbl|camera shake",
    "vertigo": r"vertigo|dolly[ -]zoom|zolly",
    "all": r"camera (?:movement|motion)|moving camera|camera moves",
}


@dataclass
class Segment:
    text: str
    moves: dict[str, int] = field(default_factory=dict)  # axis -> sign
    speed: str = "normal"
    static: bool = False


@dataclass
class CameraPlan:
    segments: list[Segment]
    removed: list[str] = field(default_factory=list)  # axes the negative prompt removed
    chosen_by_seed: bool = False  # no camera words: the seed picked a subtle move
    drift: float = 0.0  # 1 - guidance_scale: seed-driven gentle drift amplitude

    @property
    def shake(self) -> bool:
        return any("shake" in s.moves for s in self.segments)

    def describe(self) -> list[str]:
        """Human-readable steps, e.g. ["slow zoom in", "pan right"]."""
        return [_describe(s) for s in self.segments]

    def to_json(self) -> dict:
        return {"steps": self.describe(), "segments": [asdict(s) for s in self.segments],
                "removed_by_negative_prompt": self.removed, "chosen_by_seed": self.chosen_by_seed,
                "drift": round(self.drift, 3)}


def plan_camera(prompt: str, negative_prompt: str = "", guidance_scale: float = 1.0, seed: int = 0) -> CameraPlan:
    removed = _removed_axes(negative_prompt)
    segments = [s for s in (_segment(c, removed) for c in _clauses(prompt)) if s is not None]
    plan = CameraPlan(segments, removed=sorted(removed), drift=1.0 - guidance_scale)
    if not segments:
        plan.segments = [_seed_move(seed, removed)]
        plan.chosen_by_seed = True
    if any(s.static for s in plan.segments) or "all" in removed:
        plan.drift = 0.0
    return plan


def _clauses(prompt: str) -> list[str]:
    text = FIRST.sub(" ", prompt)
    return [c.strip() for c in SPLIT.split(text) if c and c.strip()]


def _segment(clause: str, removed: set[str]) -> Segment | None:
    moves: dict[str, int] = {}
    static = False
    taken: list[tuple[int, int]] = []
    for pattern, axis, sign in _COMPILED:
        for m in pattern.finditer(clause):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue  # part of a longer phrase already read
            taken.append((m.start(), m.end()))
            if axis == "static":
                static = True
            elif axis not in removed and "all" not in removed:
                moves.setdefault(axis, sign)
    if not moves and not static:
        return None
    speed = "slow" if SLOW.search(clause) else "fast" if FAST.search(clause) else "normal"
    return Segment(text=clause, moves={} if static else moves, speed=speed, static=static)


def _removed_axes(negative_prompt: str) -> set[str]:
    return {axis for axis, words in NEGATIVE_WORDS.items() if re.search(words, negative_prompt or "", re.I)}


def _seed_move(seed: int, removed: set[str]) -> Segment:
    if "all" in removed:
        return Segment(text="(no camera words; camera movement excluded)", static=True)
    options = [m for m in (("zoom", 1), ("x", 1), ("x", -1), ("y", -1), ("zoom", -1)) if m[0] not in removed]
    if not options:
        return Segment(text="(no camera words; every move excluded)", static=True)
    axis, sign = random.Random(seed).choice(options)
    return Segment(text="(no camera words: a subtle move chosen by the seed)", moves={axis: sign}, speed="slow")


_NAMES = {
    ("zoom", 1): "zoom in", ("zoom", -1): "zoom out", ("x", 1): "pan right", ("x", -1): "pan left",
    ("y", -1): "tilt up", ("y", 1): "tilt down", ("roll", 1): "roll clockwise",
    ("roll", -1): "roll counter-clockwise", ("orbit", 1): "orbit right", ("orbit", -1): "orbit left",
    ("vertigo", 1): "dolly zoom", ("shake", 1): "handheld",
}


def _describe(s: Segment) -> str:
    if s.static:
        return "static"
    words = " + ".join(_NAMES[(axis, sign)] for axis, sign in s.moves.items())
    return words if s.speed == "normal" else f"{s.speed} {words}"
