"""What the Rankings page shows, computed without streamlit (app_pages/13_Rankings.py).

- Keys: what has been ranked, one entry per (method, round, role, model, judge) with its newest
  rankings counted, valid and invalid (core.store.ranking SELECT_RANKING_KEYS).
- Cards: per prompt, its answers in rank order with their scores: the teacher's mean log-prob
  (probabilistic) or the judge's rank and the place each answer was shown at (contextual: the
  judge saw them shuffled). An invalid contextual ranking lists its answers in the order shown,
  the judge's raw text and the parse error.
- Export: the rankings as JSONL (prompt + ordered answers) or as TRL preference pairs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from core import ranking
from core.selection import ExploreFilter

PAGE_SIZE = 10
EXPORTS = {"rankings": "Rankings (prompt + answers best first)", "adjacent": "Preference pairs, adjacent ranks",
           "all": "Preference pairs, every k < l"}
METHOD_LABELS = {"probabilistic": "probabilistic (teacher's log-prob)", "contextual": "contextual (judge, listwise)"}


def ranking_keys(ws) -> list[dict]:
    """Everything ranked so far, round by round."""
    return ws.store.ranking_keys()


def key_label(key: dict) -> str:
    who = f"{key['role']} · {key['model']}" + (f" · judge {key['judge']}" if key.get("judge") else "")
    return (f"round {key['round']} · {key['method']} · {who} — {key['valid']} valid"
            + (f", {key['invalid']} invalid" if key["invalid"] else ""))


def totals(keys: list[dict]) -> dict:
    """Rankings per method, valid and invalid, over every key."""
    out = {m: {"valid": 0, "invalid": 0} for m in ranking.METHODS}
    for k in keys:
        out[k["method"]]["valid"] += int(k["valid"])
        out[k["method"]]["invalid"] += int(k["invalid"])
    return out


def _rows(ws, key: dict) -> list[dict]:
    return ws.store.latest_rankings(key["method"], ExploreFilter(), key["role"], key["model"], key.get("judge"),
                                    key["round"])


def cards(ws, key: dict, page: int = 0, page_size: int = PAGE_SIZE, only_invalid: bool = False) -> dict:
    """One page of prompts with their ranked answers: {"cards": [...], "n": all, "pages": n}."""
    rows = _rows(ws, key)
    if only_invalid:
        rows = [r for r in rows if r["response_ids"] is None]
    pages = max(1, -(-len(rows) // page_size))
    page = min(max(0, int(page)), pages - 1)
    chosen = rows[page * page_size: (page + 1) * page_size]
    parsed = []
    for r in chosen:
        params = json.loads(r["params"]) if r["params"] else {}
        ids = json.loads(r["response_ids"]) if r["response_ids"] is not None else None
        scores = json.loads(r["scores"]) if r["scores"] is not None else None
        parsed.append((r, params, ids, scores))
    wanted = sorted({i for _, p, ids, _ in parsed for i in (ids or p.get("shown") or [])})
    texts = ws.store.response_texts(wanted) if wanted else {}
    out = []
    for r, params, ids, scores in parsed:
        shown = params.get("shown") or []
        place = {rid: j + 1 for j, rid in enumerate(shown)}
        order = ids if ids is not None else shown
        answers = []
        for k, rid in enumerate(order):
            score = scores[k] if scores is not None else None
            answers.append({"rank": k + 1 if ids is not None else None, "response_id": rid,
                            "text": texts.get(rid), "score": score, "shown_as": place.get(rid),
                            "label": answer_label(r["method"], k + 1 if ids is not None else None, score,
                                                  place.get(rid))})
        out.append({"instruction_id": r["instruction_id"], "instruction": r["instruction"], "input": r["input"],
                    "valid": ids is not None, "raw": r["raw"], "parse_error": r["parse_error"],
                    "method": r["method"], "answers": answers, "created_at": str(r["created_at"])})
    return {"cards": out, "n": len(rows), "pages": pages, "page": page}


def answer_label(method: str, rank: int | None, score, shown_as: int | None) -> str:
    if method == "probabilistic":
        return f"#{rank} · mean log-prob {score:.3f}" if score is not None else f"#{rank}"
    where = f"shown as Answer {shown_as}" if shown_as else "shown position unknown"
    return f"#{rank} · judge rank {int(score)} · {where}" if rank is not None else where


def export_file(ws, key: dict, what: str = "rankings") -> tuple[bytes, str, int]:
    """The chosen export of this key's valid rankings: (bytes, file name, lines)."""
    if what not in EXPORTS:
        raise ValueError(f"export must be one of {', '.join(EXPORTS)}, not {what!r}")
    args = dict(role=key["role"], model=key["model"], judge=key.get("judge"), round=key["round"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.jsonl"
        if what == "rankings":
            done = ranking.export_rankings(ws, path, key["method"], **args)
        else:
            done = ranking.export_preferences(ws, path, key["method"], what, **args)
        data = path.read_bytes()
    name = f"{key['method']}-r{key['round']}-{key['role']}-{what}.jsonl"
    return data, name, int(done["n"])
