"""Tuna's rankings as data (Li et al. 2023, arXiv 2310.13385; DESIGN.md §1, §6).

Probabilistic ranking: a model's N answers to one instruction, ranked by the model's own mean
token log-probability, highest first. The generate stage stores that value per sample in
`responses.meta.mean_logprob` (core.generate), so ranking needs no model call:

    summary = rank_probabilistic(ws, role="teacher", model="teacher-model")
    groups = ranking_groups(ws, role="teacher", model="teacher-model")   # core.train.ranking's input
    export_rankings(ws, "rankings.jsonl")

Per instruction, the answers of that role and model in `round` that have a log-prob are ranked
by it; ties go to the smaller response id (deterministic, independent of insertion order). An
instruction with fewer than two such answers gets no ranking and is counted by reason. A
ranking's id is a content hash of method, instruction, role, model, judge, round and the ranked
ids, so a re-run over the same answers adds nothing; a new sample gives a new row, and readers
take the newest one per (instruction, method, role, model, judge, round).

Contextual ranking (a judge ranks the student's answers listwise, in a shuffled order; an
invalid ranking is NULL with its raw text kept) writes the same table with method 'contextual',
`judge`, `raw`, `parse_error` and `template_hash`; its stage is a later slice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.ids import content_id
from core.selection import ExploreFilter

METHODS = ("probabilistic", "contextual")

# The rankings table is migration 0013_rankings (core/migrations.py).

NO_ANSWER = "no answer of this role and model"
TOO_FEW = "fewer than two answers with a log-prob"

__all__ = ["METHODS", "RankSummary", "export_rankings", "rank_by_logprob", "rank_probabilistic",
           "ranking_groups", "ranking_id"]


def ranking_id(method: str, instruction_id: str, role: str, model: str, judge: str | None, round: int,
               response_ids: Iterable[str] | None) -> str:
    ranked = json.dumps(list(response_ids)) if response_ids is not None else ""
    return content_id("ranking", method, instruction_id, role, model, judge or "", str(int(round)), ranked)


@dataclass(frozen=True)
class RankSummary:
    """What one ranking run found and wrote."""

    method: str
    role: str
    model: str
    round: int
    ranked: int                                            # instructions that got a ranking
    new: int                                               # of those, rankings not stored before
    skipped: dict[str, int] = field(default_factory=dict)  # instructions without one, by reason
    answers: int = 0                                       # answers ranked
    without_logprob: int = 0                               # answers left out: no stored log-prob

    @property
    def instructions(self) -> int:
        return self.ranked + sum(self.skipped.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"instructions": self.instructions}

    def line(self) -> str:
        text = (f"{self.method} ranking of {self.model} · {self.role}: {self.ranked} of {self.instructions} "
                f"instructions ranked ({self.new} new, {self.answers} answers)")
        if self.skipped:
            text += "; not ranked: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        if self.without_logprob:
            text += f"; {self.without_logprob} answers had no log-prob"
        return text


def rank_by_logprob(answers: Iterable[Mapping]) -> dict:
    """The probabilistic ranking rule in plain Python, on dicts with instruction_id, response_id
    (None: the instruction has no answer) and mean_logprob (None: not stored).

    Returns {"rankings": [{instruction_id, response_ids, scores}], "skipped": {reason: n},
    "without_logprob": n}, rankings in the order instructions first appear. Best first: the
    highest mean log-prob; a tie goes to the smaller response id."""
    by_instruction: dict[str, list[tuple[str, float]]] = {}
    answered: set[str] = set()
    without = 0
    for a in answers:
        scored = by_instruction.setdefault(a["instruction_id"], [])
        if a.get("response_id") is None:
            continue
        answered.add(a["instruction_id"])
        if a.get("mean_logprob") is None:
            without += 1
            continue
        scored.append((a["response_id"], float(a["mean_logprob"])))
    rankings, skipped = [], Counter()
    for iid, scored in by_instruction.items():
        if len(scored) < 2:
            skipped[TOO_FEW if iid in answered else NO_ANSWER] += 1
            continue
        ordered = sorted(scored, key=lambda rs: (-rs[1], rs[0]))
        rankings.append({"instruction_id": iid, "response_ids": [r for r, _ in ordered],
                         "scores": [s for _, s in ordered]})
    return {"rankings": rankings, "skipped": dict(skipped), "without_logprob": without}


def rank_probabilistic(ws, role: str, model: str, selection: ExploreFilter | None = None,
                       round: int = 0) -> RankSummary:
    """Rank each selected instruction's answers of `role` by `model` in `round` by their stored
    mean log-prob and write the rankings (method 'probabilistic'). Idempotent."""
    from core.stages import check_role

    check_role(role)
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be the answers' model name, not {model!r}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a whole number >= 0, not {round!r}")
    result = rank_by_logprob(ws.store.ranking_answers(selection or ExploreFilter(), role, model, round))
    params = json.dumps({"source": "responses.meta.mean_logprob", "ties": "smaller response id"})
    rows = [[ranking_id("probabilistic", r["instruction_id"], role, model, None, round, r["response_ids"]),
             r["instruction_id"], "probabilistic", role, model, None, None, json.dumps(r["response_ids"]),
             json.dumps(r["scores"]), None, None, int(round), params] for r in result["rankings"]]
    new = ws.store.insert_rankings(rows)
    return RankSummary("probabilistic", role, model, round, ranked=len(rows), new=new, skipped=result["skipped"],
                       answers=sum(len(r["response_ids"]) for r in result["rankings"]),
                       without_logprob=result["without_logprob"])


def _ranked_records(ws, method: str, selection, role, model, judge, round) -> list[dict]:
    """The newest valid rankings with their prompt conversation and answer texts, best first."""
    from core.generate import conversation_for

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    rows = ws.store.latest_rankings(method, selection or ExploreFilter(), role, model, judge, round)
    rows = [r for r in rows if r["response_ids"] is not None]  # an invalid contextual ranking trains nothing
    for r in rows:
        r["response_ids"] = json.loads(r["response_ids"])
        r["scores"] = json.loads(r["scores"]) if r["scores"] is not None else None
    ids = sorted({rid for r in rows for rid in r["response_ids"]})
    texts = ws.store.response_texts(ids) if ids else {}
    out = []
    for r in rows:
        if any(rid not in texts for rid in r["response_ids"]):
            continue  # an answer was removed since: the ranking no longer stands
        out.append({"id": r["id"], "instruction_id": r["instruction_id"], "method": r["method"], "role": r["role"],
                    "model": r["model"], "judge": r["judge"], "round": r["round"],
                    "messages": conversation_for(r["instruction"], r["input"], r["system"], r["history"]),
                    "response_ids": r["response_ids"], "responses": [texts[rid] for rid in r["response_ids"]],
                    "scores": r["scores"]})
    return out


def ranking_groups(ws, method: str = "probabilistic", *, role: str | None = None, model: str | None = None,
                   judge: str | None = None, round: int | None = None, selection: ExploreFilter | None = None):
    """The newest valid rankings as core.train.ranking.RankingGroup (prompt, answers best first)."""
    from core.train.ranking import RankingGroup

    return [RankingGroup(tuple(r["messages"]), tuple(r["responses"]), r["instruction_id"])
            for r in _ranked_records(ws, method, selection, role, model, judge, round)]


def export_rankings(ws, out: str | Path, method: str = "probabilistic", *, role: str | None = None,
                    model: str | None = None, judge: str | None = None, round: int | None = None,
                    selection: ExploreFilter | None = None) -> dict:
    """JSONL, one line per ranking: instruction_id, messages (the prompt), responses (best first),
    response_ids, scores, method, role, model, judge, round. Written to a temporary name, then
    renamed. Returns {"path", "n"}."""
    records = _ranked_records(ws, method, selection, role, model, judge, round)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            line = {k: r[k] for k in ("instruction_id", "messages", "responses", "response_ids", "scores", "method",
                                      "role", "model", "judge", "round")}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return {"path": str(out), "n": len(records)}
