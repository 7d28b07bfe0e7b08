"""Pure parsers for judge output: text in, a small verdict out. No model, no store, no I/O.

The judge templates (core/prompts/) ask for reasoning first and one machine-readable line last.
Every parser here follows the same rules:

- It reads the **last** such line. A judge may think aloud, quote the format, or change its mind
  ("Score: 6 ... on reflection, Score: 7"): the last line wins, and when earlier lines disagree
  the verdict carries a `warning` naming them.
- A verdict that cannot be read has `score=None` (winner, ranking None) and an `error`, never 0
  and never a clamped value: "Score: 11" on a 1-10 scale is an error, not a 10. The caller stores
  the raw text beside it, so nothing is lost.
- Errors are "code: detail"; `error_code()` returns the code, for counting failures by kind:
  empty, no_score, no_number, out_of_range, wrong_scale, ambiguous, not_permutation.

Accepted score lines (case-insensitive; markdown bold/italics, bullets, headings and quote marks
around them are ignored): "Score: 7", "Score: 7/10", "Score = 7", "**Score:** 7", "Final score: 7",
"Rating: 4 out of 5", "Score (1-10): 8.5", "Score:" with the number alone on the next line, and
MT-Bench's "[[8]]" anywhere. A denominator must equal the scale's maximum ("7/10" on a 1-5
scale is wrong_scale, not rescaled). Unicode digits (e.g. full-width) are read as digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "ASPECTS", "AspectVerdict", "PairVerdict", "RankVerdict", "Verdict",
    "error_code", "parse_aspects", "parse_pairwise", "parse_ranking", "parse_score", "swap_winner",
]

EMPTY = "empty"
NO_SCORE = "no_score"
NO_NUMBER = "no_number"
OUT_OF_RANGE = "out_of_range"
WRONG_SCALE = "wrong_scale"
AMBIGUOUS = "ambiguous"
NOT_PERMUTATION = "not_permutation"


def error_code(error: str | None) -> str | None:
    """The code part of a parser error ("out_of_range: 11 is ..." -> "out_of_range")."""
    return None if error is None else error.split(":", 1)[0]


@dataclass(frozen=True)
class Verdict:
    """A pointwise verdict: a score on the rubric's scale, or None with an error."""

    score: float | None
    rationale: str | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.score is not None


@dataclass(frozen=True)
class PairVerdict:
    """A pairwise verdict in the labels the judge saw: 'A', 'B', 'tie', or None with an error."""

    winner: str | None
    rationale: str | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.winner is not None


@dataclass(frozen=True)
class RankVerdict:
    """A listwise verdict: the answer numbers as shown (1-based), best first; None with an error."""

    ranking: list[int] | None
    rationale: str | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.ranking is not None


@dataclass(frozen=True)
class AspectVerdict:
    """Per-aspect scores (UltraFeedback/Zephyr style). An aspect that did not parse is None, with
    its own error; `score` (the mean Zephyr ranks by) is None unless every aspect parsed."""

    scores: dict[str, float | None]
    rationales: dict[str, str | None] = field(default_factory=dict)
    errors: dict[str, str | None] = field(default_factory=dict)
    warnings: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v is not None for v in self.scores.values())

    @property
    def score(self) -> float | None:
        values = list(self.scores.values())
        if not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)

    @property
    def error(self) -> str | None:
        failed = [f"{a}: {e}" for a, e in self.errors.items() if e]
        if not failed:
            return None
        if all(error_code(e) == EMPTY for e in self.errors.values() if e):
            return next(e for e in self.errors.values() if e)
        return "; ".join(failed)

    @property
    def rationale(self) -> str | None:
        parts = [f"{a}: {r}" for a, r in self.rationales.items() if r]
        return "\n".join(parts) or None


# --------------------------------------------------------------------------------------------
# Finding the machine-readable lines
# --------------------------------------------------------------------------------------------

# Bullets, headings, quote marks and markdown emphasis may precede a label.
_LEAD = r"^[ \t>#*_`\-•]*"
# An optional parenthetical between label and separator: "Score (1-10): 7".
_SEP = r"(?:[ \t]*\([^)\n]*\))?[ \t*_`]*[:=：][ \t*_`]*"
_MARKDOWN = " \t*_`"


def _line_re(label: str) -> re.Pattern:
    return re.compile(_LEAD + r"(?P<label>" + label + r")\b" + _SEP + r"(?P<value>[^\n]*)$", re.I | re.M)


@dataclass(frozen=True)
class _Hit:
    start: int        # where the line (or the [[...]] marker) starts: the rationale ends here
    end: int          # end of the text holding the value
    value: str        # what follows the label and separator, or what is inside [[...]]
    label: str = ""


def _hits(text: str, line_re: re.Pattern, bracket_re: re.Pattern | None = None) -> list[_Hit]:
    hits = []
    for m in line_re.finditer(text):
        value, end = m.group("value"), m.end()
        if not value.strip(_MARKDOWN):
            # "Score:" with the value alone on the next non-empty line.
            nxt = re.compile(r"\n[ \t]*([^\n]*\S[^\n]*)").match(text, end)
            nxt = nxt or re.compile(r"\n\s*\n[ \t]*([^\n]*\S[^\n]*)").match(text, end)
            if nxt and not line_re.match(nxt.group(1).strip()):
                value, end = nxt.group(1), nxt.end()
        hits.append(_Hit(m.start(), end, value, m.group("label")))
    if bracket_re is not None:
        lines = [(h.start, h.end) for h in hits]
        for m in bracket_re.finditer(text):
            # "Score: [[8]]" is one hit (the labelled line), not two.
            if not any(start <= m.start() < end for start, end in lines):
                hits.append(_Hit(m.start(), m.end(), m.group(1)))
    hits.sort(key=lambda h: h.start)
    return hits


_RATIONALE_LABEL = re.compile(
    r"^[ \t>#*_`]*(?:rationale|reasoning|explanation|justification|evaluation|analysis|comparison)"
    r"[ \t*_`]*[:：][ \t*_`]*", re.I)


def _rationale(text: str, before: int, label: re.Pattern | None = None) -> str | None:
    body = text[:before].strip()
    body = (label or _RATIONALE_LABEL).sub("", body, count=1).strip()
    return body or None


def _fmt(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[\[(\"'\s]*(?P<num>[-+−]?\d+(?:\.\d+)?)(?P<rest>.*)", re.S)
_DENOMINATOR = re.compile(r"\s*(?:/|／|out\s+of\b|of\b)\s*(?P<den>\d+(?:\.\d+)?)", re.I)
_RANGE = re.compile(r"\s*(?:-|–|—|~|to\b)\s*\d", re.I)
_TAIL_JUNK = " \t*_`])\"'.!"


@dataclass(frozen=True)
class _Number:
    value: float | None
    denominator: float | None = None
    problem: str | None = None   # an error, when the value cannot stand as a score
    tail: str = ""               # what follows the number (and its denominator)


def _read_number(value: str) -> _Number:
    v = value.strip(_MARKDOWN)
    m = _NUMBER.match(v)
    if not m:
        shown = v[:40] or "(nothing)"
        return _Number(None, problem=f"{NO_NUMBER}: the score line holds no number: {shown!r}")
    number = float(m["num"].replace("−", "-"))
    rest = m["rest"].lstrip(" \t*_`")
    if rest.startswith("%"):
        return _Number(number, problem=f"{WRONG_SCALE}: {_fmt(number)}% is a percentage, not a score")
    if _RANGE.match(rest):
        return _Number(number, problem=f"{AMBIGUOUS}: {v[:40]!r} is a range, not one score")
    den = _DENOMINATOR.match(rest)
    if den:
        rest = rest[den.end():]
    return _Number(number, float(den["den"]) if den else None, tail=rest.strip(_TAIL_JUNK))


def _check_scale(n: _Number, lo: float, hi: float) -> str | None:
    if n.problem:
        return n.problem
    if n.denominator is not None and n.denominator != hi:
        return (f"{WRONG_SCALE}: {_fmt(n.value)}/{_fmt(n.denominator)} is not on the "
                f"{_fmt(lo)}-{_fmt(hi)} scale")
    if not lo <= n.value <= hi:
        return f"{OUT_OF_RANGE}: {_fmt(n.value)} is outside the {_fmt(lo)}-{_fmt(hi)} scale"
    return None


def _conflict_warning(numbers: list[float | None], chosen: float | None) -> str | None:
    seen = [x for x in numbers if x is not None]
    if len(set(seen)) > 1:
        return f"{len(numbers)} score lines ({', '.join(_fmt(x) for x in seen)}); the last one counts ({_fmt(chosen) if chosen is not None else 'unreadable'})"
    return None


# --------------------------------------------------------------------------------------------
# Pointwise
# --------------------------------------------------------------------------------------------

_SCORE_LINE = _line_re(r"(?:(?:final|overall|total|my)[ \t]+)?(?:score|rating)")
_SCORE_BRACKET = re.compile(r"\[\[\s*([-+−]?\d+(?:\.\d+)?\s*(?:(?:/|out\s+of)\s*\d+)?)\s*\]\]", re.I)


def parse_score(text: str | None, scale_min: float = 1, scale_max: float = 10) -> Verdict:
    """Read the last score line of a pointwise verdict on the scale [scale_min, scale_max]."""
    if text is None or not text.strip():
        return Verdict(None, error=f"{EMPTY}: the judge returned no text")
    hits = _hits(text, _SCORE_LINE, _SCORE_BRACKET)
    if not hits:
        tail = text.strip()[-40:]
        return Verdict(None, error=f"{NO_SCORE}: no 'Score: N' line (the output ends {tail!r})")
    numbers = [_read_number(h.value) for h in hits]
    last, number = hits[-1], numbers[-1]
    rationale = _rationale(text, last.start)
    warning = _conflict_warning([n.value for n in numbers], number.value)
    error = _check_scale(number, scale_min, scale_max)
    if error:
        return Verdict(None, rationale, error, warning)
    return Verdict(number.value, rationale, None, warning)


# --------------------------------------------------------------------------------------------
# Aspects (UltraFeedback / Zephyr)
# --------------------------------------------------------------------------------------------

ASPECTS: dict[str, str] = {
    # key (stored as rubric suffix) -> label pattern as the judge writes it
    "helpfulness": r"helpfulness",
    "honesty": r"honesty",
    "instruction_following": r"instruction[ \t_\-]*following",
    "truthfulness": r"truthfulness",
}


def parse_aspects(text: str | None, scale_min: float = 1, scale_max: float = 5,
                  aspects: dict[str, str] | None = None) -> AspectVerdict:
    """Read "<Aspect> score: N" for each aspect (the last line per aspect wins). A bare
    "<Aspect>: N" counts only when the line holds nothing but the number, so a rationale line
    "Helpfulness: 3 steps are missing" is not mistaken for a score."""
    aspects = aspects or ASPECTS
    if text is None or not text.strip():
        err = f"{EMPTY}: the judge returned no text"
        return AspectVerdict({a: None for a in aspects}, {a: None for a in aspects},
                             {a: err for a in aspects}, {a: None for a in aspects})
    chosen: dict[str, tuple[_Hit, _Number] | None] = {}
    warnings: dict[str, str | None] = {}
    for key, label in aspects.items():
        line_re = _line_re(label + r"(?:[ \t]+(?:score|rating))?")
        found = []
        for hit in _hits(text, line_re):
            number = _read_number(hit.value)
            bare = not re.search(r"(?:score|rating)$", hit.label, re.I)
            if bare and (number.value is None or number.problem or re.search(r"\w", number.tail)):
                continue  # "Helpfulness: the answer ..." is reasoning, not a score line
            found.append((hit, number))
        chosen[key] = found[-1] if found else None
        warnings[key] = _conflict_warning([n.value for _, n in found], found[-1][1].value) if found else None
    # Each aspect's rationale is the text between the previous score line and its own.
    order = sorted((hn[0].start, hn[0].end, key) for key, hn in chosen.items() if hn)
    rationales: dict[str, str | None] = {a: None for a in aspects}
    previous_end = 0
    for start, end, key in order:
        own_label = re.compile(_LEAD + aspects[key] + r"(?:[ \t]+(?:rationale|reasoning|explanation))?"
                               r"[ \t*_`]*[:：][ \t*_`]*", re.I)
        rationales[key] = _rationale(text[previous_end:start], start - previous_end, own_label)
        previous_end = end
    scores: dict[str, float | None] = {}
    errors: dict[str, str | None] = {}
    for key in aspects:
        if chosen[key] is None:
            scores[key], errors[key] = None, f"{NO_SCORE}: no '{key.replace('_', ' ').capitalize()} score: N' line"
            continue
        error = _check_scale(chosen[key][1], scale_min, scale_max)
        scores[key], errors[key] = (None, error) if error else (chosen[key][1].value, None)
    return AspectVerdict(scores, rationales, errors, warnings)


# --------------------------------------------------------------------------------------------
# Pairwise
# --------------------------------------------------------------------------------------------

_PAIR_LINE = _line_re(
    r"(?:final[ \t]+)?(?:winner|verdict|decision|preference|choice|"
    r"(?:better|preferred)(?:[ \t]+(?:answer|response))?)")
# MT-Bench writes [[A]], [[B]] and [[C]] (tie).
_PAIR_BRACKET = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.I)
_TIE_WORDS = re.compile(r"\b(?:tie|tied|draw|equal|equally|neither|both|none)\b", re.I)
_PAIR_FILLER = re.compile(r"\b(?:answer|response|assistant|output|option|the|is|better|wins?)\b", re.I)


def _read_winner(value: str, bracket: bool) -> tuple[str | None, str | None]:
    v = value.strip(_MARKDOWN + "[]()\"'")
    if bracket:
        v = v.upper()
        return ("tie" if v in ("C", "TIE") else v), None
    if not v:
        return None, f"{NO_NUMBER}: the verdict line is empty"
    clause = re.split(r"[.,;:!(—–]|\s-\s|\bbecause\b|\bsince\b", v, maxsplit=1)[0].strip()
    if clause.lower() in ("a", "b"):
        return clause.upper(), None
    letters = set(re.findall(r"\b[AB]\b", _PAIR_FILLER.sub(" ", clause)))
    tie = bool(_TIE_WORDS.search(clause))
    if tie and not letters:
        return "tie", None
    if len(letters) == 1 and not tie:
        return letters.pop(), None
    reason = "names both answers" if letters or tie else "names neither A, B nor a tie"
    return None, f"{AMBIGUOUS}: the verdict {v[:40]!r} {reason}"


def parse_pairwise(text: str | None) -> PairVerdict:
    """Read the last "Winner: A|B|tie" line (or [[A]]/[[B]]/[[C]]). Labels are as shown to the
    judge; `core.judge.combine_pairwise` maps a swapped call back to the original order."""
    if text is None or not text.strip():
        return PairVerdict(None, error=f"{EMPTY}: the judge returned no text")
    hits = _hits(text, _PAIR_LINE, _PAIR_BRACKET)
    if not hits:
        tail = text.strip()[-40:]
        return PairVerdict(None, error=f"{NO_SCORE}: no 'Winner: A|B|tie' line (the output ends {tail!r})")
    readings = [_read_winner(h.value, bracket=not h.label) for h in hits]
    winner, error = readings[-1]
    rationale = _rationale(text, hits[-1].start)
    seen = [w for w, _ in readings if w]
    warning = (f"{len(readings)} verdict lines ({', '.join(seen)}); the last one counts"
               if len(set(seen)) > 1 else None)
    return PairVerdict(winner, rationale, error, warning)


def swap_winner(winner: str | None) -> str | None:
    """Map a verdict from a call with the answers swapped back to the original labels."""
    return {"A": "B", "B": "A"}.get(winner, winner) if winner else None


# --------------------------------------------------------------------------------------------
# Listwise
# --------------------------------------------------------------------------------------------

_RANK_LINE = _line_re(r"(?:final[ \t]+)?(?:ranking|ranks|rank[ \t]+order|order)")
_RANK_BRACKET = re.compile(r"\[\[([^\[\]\n]*\d[^\[\]\n]*)\]\]")
_RANK_SPLIT = re.compile(r"\s*(?:>|≻|→|,|;|\bthen\b)\s*", re.I)
_RANK_ITEM = re.compile(
    r"[\[(#*_`\s]*(?:(?:answer|response|assistant|output|candidate)\s*)?#?\s*(\d+)[\])*_`\s.]*", re.I)


def parse_ranking(text: str | None, k: int) -> RankVerdict:
    """Read the last "Ranking: 2 > 1 > 3" line and check it is a permutation of 1..k.

    Accepted separators: ">", ",", ";", "≻", "→"; items may be written "2", "[2]", "(2)",
    "Answer 2" or "#2". Ties ("2 = 1 > 3") and anything not a permutation are errors."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if text is None or not text.strip():
        return RankVerdict(None, error=f"{EMPTY}: the judge returned no text")
    hits = _hits(text, _RANK_LINE, _RANK_BRACKET)
    if not hits:
        tail = text.strip()[-40:]
        return RankVerdict(None, error=f"{NO_SCORE}: no 'Ranking: 2 > 1 > 3' line (the output ends {tail!r})")
    last = hits[-1]
    rationale = _rationale(text, last.start)
    readings = [_read_ranking(h.value, k)[0] for h in hits]
    ranking, error = _read_ranking(last.value, k)
    seen = [tuple(r) for r in readings if r]
    warning = (f"{len(hits)} ranking lines ({'; '.join(' > '.join(map(str, r)) for r in seen)}); the last one counts"
               if len(set(seen)) > 1 else None)
    return RankVerdict(ranking, rationale, error, warning)


def _read_ranking(value: str, k: int) -> tuple[list[int] | None, str | None]:
    v = value.strip(_MARKDOWN).rstrip(".")
    # A trailing remark after the last number: "2 > 1 > 3 (3 is off-topic)".
    v = re.sub(r"(?<=\d)\s+\([^)]*[A-Za-z][^)]*\)\s*\.?$", "", v)
    if not v:
        return None, f"{NO_NUMBER}: the ranking line is empty"
    if re.search(r"[=≈]|\btie", v, re.I):
        return None, f"{AMBIGUOUS}: {v[:60]!r} has a tie; every answer needs its own place"
    pieces = _RANK_SPLIT.split(v)
    while pieces and not pieces[-1].strip(_MARKDOWN):
        pieces.pop()  # "2 > 1 >" (cut off) or a trailing separator
    ranking = []
    for piece in pieces:
        m = _RANK_ITEM.fullmatch(piece)
        if not m:
            return None, f"{NO_NUMBER}: could not read {piece[:30]!r} in the ranking {v[:60]!r}"
        ranking.append(int(m.group(1)))
    problems = []
    outside = sorted({r for r in ranking if not 1 <= r <= k})
    if outside:
        problems.append(f"{', '.join(map(str, outside))} not an answer number 1-{k}")
    repeated = sorted({r for r in ranking if ranking.count(r) > 1})
    if repeated:
        problems.append(f"{', '.join(map(str, repeated))} repeated")
    missing = sorted(set(range(1, k + 1)) - set(ranking))
    if missing:
        problems.append(f"{', '.join(map(str, missing))} missing")
    if problems:
        return None, f"{NOT_PERMUTATION}: {v[:60]!r} is not a ranking of 1-{k}: {'; '.join(problems)}"
    return ranking, None
