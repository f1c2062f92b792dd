"""Whether an answer is right: by the facts it states, or by exact match with a closed answer set.

The synthetic corpus speaks a closed vocabulary (colours, shapes, directions,
code words, sounds, counts, taken from avlib.synth's own lists), so an answer's
facts can be read off its words: it is right when it states every fact of the
reference and contradicts none. MUSIC-AVQA's answers are a closed set of single
words and phrases (yes/no, counts, instruments, left/right/middle, ...): an
answer is right when it spells the reference after normalisation.
"""

from __future__ import annotations

import re

from avlib import synth

WORD = re.compile(r"[a-z]+")
# Every vocabulary list is the generator's own (avlib.synth); only the synonyms an answer may use are added here.
_SYNONYMS = {"top": ("direction", "up"), "bottom": ("direction", "down"), "beep": ("sound", "beeps")}
_ATTRIBUTES = {
    **{c: ("color", c) for c in synth.COLORS},
    **{b: ("background", b) for b in synth.BACKGROUNDS},
    **{s: ("shape", s) for s in synth.SHAPES},
    **{w: ("word", w) for w in synth.WORDS},
    **{d: ("direction", d) for d in synth.DIRECTIONS},
    **{s: ("sound", s) for s in synth.SOUNDS},
    **_SYNONYMS,
}
_NUMBERS = {n: i for i, n in enumerate(synth.NUMBERS)}
_EVENTS = {"voice", "speaker", "speech", *synth.SOUNDS, "beep"}


def facts(text: str) -> dict[str, str]:
    """The closed-vocabulary facts an answer states: {attribute: value}.

    Attributes: color, background, shape, direction, word, sound, count, pitch,
    silent (the answer says there is no sound), first (which event it names first).
    A later mention of an attribute does not override the first.
    """
    words = WORD.findall(text.lower())
    out: dict[str, str] = {}
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _ATTRIBUTES:
            attribute, value = _ATTRIBUTES[w]
            out.setdefault(attribute, value)
        if w in _NUMBERS and (nxt.startswith("beep") or (words[i + 2] if i + 2 < len(words) else "").startswith("beep") or len(words) <= 2):
            out.setdefault("count", str(_NUMBERS[w]))
        if w in ("low", "high") and nxt.startswith("beep"):
            out.setdefault("pitch", w)
        if w == "no" and nxt in ("sound", "word", "voice", "audio"):
            out.setdefault("silent", "yes")
        if w in _EVENTS:
            out.setdefault("first", "voice" if w in ("voice", "speaker", "speech") else _ATTRIBUTES.get(w, ("", w))[1])
    return out


def is_correct(prediction: str, reference: str, kind: str = "") -> bool:
    """Right when the prediction states every fact of the reference and contradicts none.

    The "first event" fact counts only for questions about order (kind 'order'),
    and for others only where the reference names two events.
    """
    ref, pred = facts(reference), facts(prediction)
    if kind != "order":
        ref.pop("first", None)
        pred.pop("first", None)
    if not ref:
        return _normalise(prediction) == _normalise(reference)
    if any(pred.get(k) != v for k, v in ref.items()):
        return False
    # Claiming silence, or a spoken word, where the reference says otherwise is a contradiction.
    return not ("silent" in pred and "silent" not in ref)


def _normalise(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


_DIGITS = {str(i): w for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}


def normalise_answer(text: str) -> str:
    """A short answer as MUSIC-AVQA's closed set spells it: lower case, no punctuation or articles,
    digits as words (2 -> two), spaces as underscores (acoustic guitar -> acoustic_guitar)."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))
    words = [_DIGITS.get(w, w) for w in words if w not in ("a", "an", "the")]
    return "_".join(words)


def exact_match(prediction: str, reference: str) -> bool:
    """Right when the normalised prediction is the normalised reference (the closed set's exact-match rule)."""
    return normalise_answer(prediction) == normalise_answer(reference)
