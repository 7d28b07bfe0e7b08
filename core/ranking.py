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

Contextual ranking: the judge stage with rubric `listwise` shows a judge the N answers of one
instruction in a seeded shuffled order and stores one judgment per answer (score = its rank,
params: the list, k, the place it was shown at, the permutation). `rank_contextual` turns the
newest verdict on each list into a ranking row with method 'contextual', `judge`, `raw`,
`template_hash` and the shown order in `params`; a verdict that did not parse (no ranking line,
wrong k, a repeated or missing number) or whose call failed is a row with NULL response_ids,
its raw text and the parse error, so a page can show what the judge wrote.

    summary = rank_contextual(ws, judge="judge-model", role="c1_run", model="run-r1-p", round=1)

A ranking set is the frozen data a ranking training job reads (core.train.ranking's objective):
`freeze_ranking_set` writes the newest valid rankings of one key, prompt and answers best first,
to `<workspace>/rankings/<name>.parquet` with their lineage in the file's metadata. A name is
written once: the same name again is refused unless the content is identical.

Exports: `export_rankings` (JSONL, prompt + ordered answers) and `export_preferences` (TRL's
conversational prompt/chosen/rejected pairs, adjacent ranks or every pair k < l).
"""

from __future__ import annotations

import hashlib
import json
import re
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

MIXED = "the judged list holds answers of another role, model or round"
INCOMPLETE = "the verdict covers fewer answers than the list"
LISTWISE = "listwise"
PAIRS = ("adjacent", "all")
SETS_DIR = "rankings"
SET_META_KEY = b"winnow.ranking_set"
SET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")

__all__ = ["METHODS", "PAIRS", "RankSummary", "contextual_rankings", "export_preferences", "export_rankings",
           "freeze_ranking_set", "preference_pairs", "rank_by_logprob", "rank_contextual", "rank_probabilistic",
           "ranked_records", "ranking_groups", "ranking_id", "ranking_set", "ranking_sets", "read_ranking_set"]


def ranking_id(method: str, instruction_id: str, role: str, model: str, judge: str | None, round: int,
               response_ids: Iterable[str] | None, verdict: str = "") -> str:
    """verdict: what tells two judge verdicts on one list apart (contextual: list id and raw
    text), so a re-judged list is a new row even when it is invalid again."""
    ranked = json.dumps(list(response_ids)) if response_ids is not None else ""
    parts = ("ranking", method, instruction_id, role, model, judge or "", str(int(round)), ranked)
    return content_id(*parts, verdict) if verdict else content_id(*parts)


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
    invalid: int = 0                                       # contextual: verdicts that did not parse
    errors: dict[str, int] = field(default_factory=dict)   # contextual: invalid verdicts by parse error
    judge: str | None = None

    @property
    def instructions(self) -> int:
        return self.ranked + self.invalid + sum(self.skipped.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"instructions": self.instructions}

    def line(self) -> str:
        text = (f"{self.method} ranking of {self.model} · {self.role}: {self.ranked} of {self.instructions} "
                f"instructions ranked ({self.new} new, {self.answers} answers)")
        if self.skipped:
            text += "; not ranked: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        if self.without_logprob:
            text += f"; {self.without_logprob} answers had no log-prob"
        if self.method == "contextual":
            text += f"; {self.invalid} invalid verdicts of {self.judge}"
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


# --------------------------------------------------------------------------------------------
# Contextual ranking: the listwise judge's verdicts as rankings
# --------------------------------------------------------------------------------------------


def contextual_rankings(rows: Iterable[Mapping], role: str, model: str, round: int) -> dict:
    """The contextual ranking rule in plain Python, over listwise judgment rows (list,
    response_id, instruction_id, role, model, response_round, score, raw, parse_error,
    call_error, template_hash, params (JSON), seq).

    Per list, the newest verdict (the rows sharing raw text, permutation and call error with the
    highest seq) is read: its ranks, 1 = best, order the answers. A list whose answers are not
    all of (role, model, round) is skipped (MIXED). A verdict without a score on every answer
    (unparsed, a call error) or whose ranks are not 1..k is invalid: response_ids None, with its
    raw text and the error. Returns {"rankings": [{instruction_id, list, response_ids, scores,
    shown, raw, parse_error, template_hash, k}], "skipped": {reason: n}}."""
    by_list: dict[str, list[dict]] = {}
    for row in rows:
        r = dict(row)
        r["params"] = json.loads(r["params"]) if isinstance(r["params"], str) else dict(r["params"] or {})
        by_list.setdefault(r["list"], []).append(r)
    rankings, skipped = [], Counter()
    for list_id, list_rows in by_list.items():
        verdicts: dict[tuple, list[dict]] = {}
        for r in list_rows:
            key = (r["raw"], json.dumps(r["params"].get("permutation")), r.get("call_error") or "")
            verdicts.setdefault(key, []).append(r)
        verdict = max(verdicts.values(), key=lambda v: max(r["seq"] for r in v))
        if any((r["role"], r["model"], int(r["response_round"])) != (role, model, int(round)) for r in verdict):
            skipped[MIXED] += 1
            continue
        k = int(verdict[0]["params"].get("k") or len(verdict))
        shown = [r["response_id"] for r in sorted(verdict, key=lambda r: int(r["params"].get("shown_as") or 0))]
        first = verdict[0]
        out = {"instruction_id": first["instruction_id"], "list": list_id, "shown": shown, "raw": first["raw"],
               "template_hash": first.get("template_hash"), "k": k, "response_ids": None, "scores": None,
               "parse_error": None}
        ranks = [r["score"] for r in verdict]
        if first.get("call_error"):
            out["parse_error"] = f"call error: {first['call_error']}"
        elif any(v is None for v in ranks):
            out["parse_error"] = next((r["parse_error"] for r in verdict if r.get("parse_error")), "no rank")
        elif len(verdict) != k:
            out["parse_error"] = f"{INCOMPLETE}: {len(verdict)} of {k} answers"
        elif sorted(int(v) for v in ranks) != list(range(1, k + 1)):
            out["parse_error"] = f"ranks {sorted(int(v) for v in ranks)} are not 1..{k}"
        else:
            ordered = sorted(verdict, key=lambda r: r["score"])
            out["response_ids"] = [r["response_id"] for r in ordered]
            out["scores"] = [int(r["score"]) for r in ordered]
        rankings.append(out)
    return {"rankings": rankings, "skipped": dict(skipped)}


def rank_contextual(ws, judge: str, role: str, model: str, round: int = 0, selection: ExploreFilter | None = None,
                    rubric: str = LISTWISE) -> RankSummary:
    """The listwise judge's newest verdict on each list of answers of `role` by `model` in
    `round` as rankings (method 'contextual'); invalid verdicts are rows with NULL ranking and
    their raw text and parse error. Idempotent."""
    from core.stages import check_role

    check_role(role)
    for key, value in (("judge", judge), ("model", model)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key} must be a model name, not {value!r}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a whole number >= 0, not {round!r}")
    rows = ws.store.listwise_judgments(selection or ExploreFilter(), judge, rubric, role, model, round)
    result = contextual_rankings(rows, role, model, round)
    out, errors = [], Counter()
    for r in result["rankings"]:
        params = {"source": f"judgments ({rubric})", "rubric": rubric, "list": r["list"], "k": r["k"],
                  "shown": r["shown"]}
        if r["response_ids"] is None:
            errors[(r["parse_error"] or "").split(":")[0]] += 1
        out.append([ranking_id("contextual", r["instruction_id"], role, model, judge, round, r["response_ids"],
                               verdict=f"{r['list']}\x1f{r['raw']}\x1f{r['parse_error'] or ''}"),
                    r["instruction_id"], "contextual", role, model, judge, r["template_hash"],
                    None if r["response_ids"] is None else json.dumps(r["response_ids"]),
                    None if r["scores"] is None else json.dumps(r["scores"]), r["raw"], r["parse_error"],
                    int(round), json.dumps(params)])
    new = ws.store.insert_rankings(out)
    valid = [r for r in result["rankings"] if r["response_ids"] is not None]
    return RankSummary("contextual", role, model, round, ranked=len(valid), new=new, skipped=result["skipped"],
                       answers=sum(len(r["response_ids"]) for r in valid),
                       invalid=len(result["rankings"]) - len(valid), errors=dict(errors), judge=judge)


def ranked_records(ws, method: str, selection=None, role=None, model=None, judge=None, round=None) -> list[dict]:
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
            for r in ranked_records(ws, method, selection, role, model, judge, round)]


def export_rankings(ws, out: str | Path, method: str = "probabilistic", *, role: str | None = None,
                    model: str | None = None, judge: str | None = None, round: int | None = None,
                    selection: ExploreFilter | None = None) -> dict:
    """JSONL, one line per ranking: instruction_id, messages (the prompt), responses (best first),
    response_ids, scores, method, role, model, judge, round. Written to a temporary name, then
    renamed. Returns {"path", "n"}."""
    records = ranked_records(ws, method, selection, role, model, judge, round)
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


# --------------------------------------------------------------------------------------------
# Preference pairs (TRL's conversational format)
# --------------------------------------------------------------------------------------------


def preference_pairs(records: Iterable[Mapping], pairs: str = "adjacent") -> list[dict]:
    """TRL's conversational preference rows from rankings (messages, responses best first):
    {"prompt": [messages], "chosen": [assistant turn], "rejected": [assistant turn]}.
    pairs 'adjacent': ranks (k, k+1); 'all': every k < l (N(N−1)/2 a ranking)."""
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {', '.join(PAIRS)}, not {pairs!r}")
    out = []
    for r in records:
        answers = list(r["responses"])
        for k in range(len(answers)):
            for j in range(k + 1, len(answers) if pairs == "all" else min(k + 2, len(answers))):
                out.append({"prompt": [dict(m) for m in r["messages"]],
                            "chosen": [{"role": "assistant", "content": answers[k]}],
                            "rejected": [{"role": "assistant", "content": answers[j]}]})
    return out


def export_preferences(ws, out: str | Path, method: str = "probabilistic", pairs: str = "adjacent", *,
                       role: str | None = None, model: str | None = None, judge: str | None = None,
                       round: int | None = None, selection: ExploreFilter | None = None) -> dict:
    """JSONL of preference_pairs over the newest valid rankings (TRL's DPO/ORPO datasets read it
    as is). Written to a temporary name, then renamed. Returns {"path", "n", "rankings"}."""
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {', '.join(PAIRS)}, not {pairs!r}")
    records = ranked_records(ws, method, selection, role, model, judge, round)
    rows = preference_pairs(records, pairs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return {"path": str(out), "n": len(rows), "rankings": len(records)}


# --------------------------------------------------------------------------------------------
# Ranking sets: the frozen data of a ranking training job
# --------------------------------------------------------------------------------------------


def _set_path(ws, name: str) -> Path:
    if not isinstance(name, str) or not SET_NAME_RE.match(name):
        raise ValueError(f"a ranking set name is 1–120 letters, digits, '.', '_' or '-' (starting with a letter "
                         f"or digit), not {name!r}")
    return Path(ws.root) / SETS_DIR / f"{name}.parquet"


def _set_table(records: list[dict]):
    import pyarrow as pa

    strings = pa.list_(pa.string())
    return pa.table({
        "ranking_id": pa.array([r["id"] for r in records], pa.string()),
        "instruction_id": pa.array([r["instruction_id"] for r in records], pa.string()),
        "method": pa.array([r["method"] for r in records], pa.string()),
        "role": pa.array([r["role"] for r in records], pa.string()),
        "model": pa.array([r["model"] for r in records], pa.string()),
        "judge": pa.array([r["judge"] for r in records], pa.string()),
        "round": pa.array([int(r["round"]) for r in records], pa.int32()),
        "messages": pa.array([json.dumps(r["messages"], ensure_ascii=False) for r in records], pa.string()),
        "responses": pa.array([list(r["responses"]) for r in records], strings),
        "response_ids": pa.array([list(r["response_ids"]) for r in records], strings),
        "scores": pa.array([json.dumps(r["scores"]) for r in records], pa.string()),
    })


def freeze_ranking_set(ws, name: str, method: str = "probabilistic", *, role: str | None = None,
                       model: str | None = None, judge: str | None = None, round: int | None = None,
                       selection: ExploreFilter | None = None) -> dict:
    """Freeze the newest valid rankings of this key into the ranking set `name` (best first,
    with lineage). Refused when there is none, or when `name` exists with other content (the
    same content again returns the existing set). Returns ranking_set(ws, name)."""
    import pyarrow.parquet as pq

    path = _set_path(ws, name)
    records = ranked_records(ws, method, selection, role, model, judge, round)
    if not records:
        raise ValueError(f"ranking set {name!r}: no valid {method} ranking of role {role!r}, model {model!r}, "
                         f"judge {judge!r}, round {round!r} to freeze")
    table = _set_table(records)
    canonical = json.dumps(table.to_pylist(), sort_keys=True, ensure_ascii=False)
    content_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]
    if path.exists():
        existing = ranking_set(ws, name)
        if existing["content_hash"] != content_hash:
            raise ValueError(f"ranking set {name!r} exists already with other content ({existing['n_groups']} "
                             f"groups, hash {existing['content_hash']}); ranking sets are immutable, choose "
                             "another name")
        return existing
    lineage = {"name": name, "method": method, "role": role, "model": model, "judge": judge, "round": round,
               "selection": asdict(selection) if selection is not None else None, "content_hash": content_hash,
               "n_groups": table.num_rows, "n_answers": sum(len(r["responses"]) for r in records)}
    table = table.replace_schema_metadata({SET_META_KEY: json.dumps(lineage).encode("utf-8")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return ranking_set(ws, name)


def _set_info(path: Path) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if SET_META_KEY not in meta:
        raise ValueError(f"{path} is not a ranking set (no lineage in its metadata)")
    return json.loads(meta[SET_META_KEY]) | {"parquet_path": str(path)}


def ranking_set(ws, name: str) -> dict:
    """A ranking set's lineage: name, parquet_path, content_hash, method, role, model, judge,
    round, selection, n_groups, n_answers. ValueError when there is none of that name."""
    path = _set_path(ws, name)
    if not path.is_file():
        known = ", ".join(s["name"] for s in ranking_sets(ws)) or "none yet"
        raise ValueError(f"no ranking set named {name!r} (known: {known})")
    return _set_info(path)


def ranking_sets(ws) -> list[dict]:
    folder = Path(ws.root) / SETS_DIR
    return [_set_info(p) for p in sorted(folder.glob("*.parquet"))] if folder.is_dir() else []


def read_ranking_set(parquet: str | Path):
    """A ranking set's groups as core.train.ranking.RankingGroup, in file order."""
    import pyarrow.parquet as pq

    from core.train.ranking import RankingGroup

    rows = pq.read_table(parquet, columns=["ranking_id", "messages", "responses"]).to_pylist()
    return [RankingGroup(tuple(json.loads(r["messages"])), tuple(r["responses"]), r["ranking_id"]) for r in rows]
