"""What the Preferences page shows (app_pages/12_Preferences.py), without Streamlit: the AI-feedback
pairs (core.feedback) filtered by judge and round, largest margin first, each side with its
aspect ratings (the rationale in generate mode, the judge's label distribution in probability
mode), the current human verdict, and the judge's agreement with those verdicts."""

from __future__ import annotations

import json
from dataclasses import dataclass

from core import feedback, judge

ALL = None  # "every judge" / "every round" in the filters
VERDICT_LABELS = {"accept": "chosen better", "reject": "rejected better", "tie": "tie", None: "no verdict yet"}
EMPTY = ("No AI-feedback pairs yet: run `winnow round run recipes/zephyr-tiny.yaml`, or judge a pool's answers "
         "with the zephyr_aspects rubric and binarise them (core.feedback.binarise).")

__all__ = ["ALL", "EMPTY", "Facets", "VERDICT_LABELS", "agreement", "aspect_rows", "facets", "pair_cards"]


@dataclass(frozen=True)
class Facets:
    judges: list[str]
    rounds: list[int]

    @property
    def empty(self) -> bool:
        return not self.judges


def facets(ws) -> Facets:
    """The judges and rounds AI-feedback pairs exist for (the page's filter choices)."""
    rows = ws.store.feedback_facets()
    return Facets(sorted({r["judge_model"] for r in rows}), sorted({int(r["round"]) for r in rows}))


def aspect_rows(ws, side: dict) -> list[dict]:
    """One row per aspect of one side of a pair: its score and what explains it (the rationale of
    a generate-mode verdict, or the label distribution of a probability-mode one)."""
    aspects = side.get("aspects") or {}
    ids = [j for a in aspects.values() for j in (a.get("judgments") or [])]
    by_id = {row["id"]: row for row in ws.store.judgments_by_id(ids)} if ids else {}
    out = []
    for aspect, rating in aspects.items():
        verdicts = [by_id[j] for j in rating.get("judgments") or [] if j in by_id]
        explained = []
        for v in verdicts:
            if v.get("rationale"):
                explained.append(v["rationale"])
            elif v.get("raw"):
                explained.append(_distribution(v["raw"]))
        out.append({"aspect": aspect.replace("_", " "), "score": rating.get("score"),
                    "why": " · ".join(x for x in explained if x) or ""})
    return out


def _distribution(raw: str) -> str:
    """A probability verdict's stored distribution ({"1": 0.05, ...}) as "p: 1 5% · 2 10% …"."""
    try:
        probs = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(probs, dict):
        return raw
    return "p: " + " · ".join(f"{k} {float(v):.0%}" for k, v in probs.items())


def pair_cards(ws, judge_model: str | None = ALL, round: int | None = ALL, limit: int = 25) -> list[dict]:
    """The pairs to show, largest margin first: texts, scores, margin, each side's aspect rows,
    the current human verdict (its label too)."""
    cards = []
    for p in ws.store.pairs_for_review(judge_model, round, limit):
        ratings = p["ratings"] or {}
        cards.append(p | {"chosen_aspects": aspect_rows(ws, ratings.get("chosen") or {}),
                          "rejected_aspects": aspect_rows(ws, ratings.get("rejected") or {}),
                          "verdict": VERDICT_LABELS.get(p["decision"], p["decision"]),
                          "mode": _mode(p["template_hash"])})
    return cards


def _mode(template_hash: str | None) -> str:
    r = judge.get_rubric(feedback.DEFAULT_RUBRIC)
    return "probability" if template_hash == r.template_hash_for("probability") else "generate"


def agreement(ws, judge_model: str | None = ALL, round: int | None = ALL) -> feedback.HumanAgreement:
    return feedback.human_agreement(ws, judge_model, round, bootstrap=1000)


def tau_text(a: feedback.HumanAgreement) -> str:
    t = a.tau
    if t.value != t.value:  # NaN: fewer than two verdicts, or one side constant
        return f"n/a (n = {t.n})"
    if t.low != t.low:
        return f"{t.value:.2f} (n = {t.n})"
    return f"{t.value:.2f} [{t.low:.2f}, {t.high:.2f}] (n = {t.n})"
