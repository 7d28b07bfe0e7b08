"""The review queue: one record at a time, from a filter, a snapshot or a judge's suggestions.

A queue is a frozen list of review targets (a response, an instruction without responses, or a
preference pair), built once from its source so progress ("12 done, 8 left") counts over a
fixed set; a target is done when it has a stored decision. `QueueSource` is the value that
names a queue: pages link to the Review page with `source.to_query()` as query parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from core.selection import ExploreFilter

SOURCE_KINDS = ("filter", "snapshot", "judge")
DEFAULT_SIZE = {"filter": 50, "snapshot": 50, "judge": 20}
MAX_SIZE = 1000


@dataclass(frozen=True)
class QueueSource:
    """Where a queue's records come from.

    filter: the instructions an ExploreFilter matches; snapshot: a snapshot's members; judge:
    the unlabeled targets of one judge and rubric nearest a threshold (the labels that narrow
    the calibration interval most, DESIGN.md §6)."""

    kind: str
    filter: ExploreFilter = field(default_factory=ExploreFilter)
    snapshot: str | None = None
    judge_model: str | None = None
    rubric: str | None = None
    threshold: float | None = None
    size: int | None = None  # None: DEFAULT_SIZE[kind]

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"queue source must be one of {', '.join(SOURCE_KINDS)}, not {self.kind!r}")
        if self.kind == "snapshot" and not self.snapshot:
            raise ValueError("a snapshot queue needs a snapshot name")
        if self.kind == "judge" and (not self.judge_model or not self.rubric or self.threshold is None):
            raise ValueError("a judge queue needs a judge model, a rubric and a threshold")
        if self.size is not None and not 1 <= int(self.size) <= MAX_SIZE:
            raise ValueError(f"queue size must be between 1 and {MAX_SIZE}, not {self.size}")

    @property
    def n(self) -> int:
        return int(self.size) if self.size is not None else DEFAULT_SIZE[self.kind]

    def to_query(self) -> dict[str, str]:
        """Query parameters for a link to the Review page (strings only)."""
        out = {"source": self.kind}
        if self.kind == "filter" and self.filter != ExploreFilter():
            out["filter"] = json.dumps(asdict(self.filter), sort_keys=True, separators=(",", ":"))
        if self.kind == "snapshot":
            out["snapshot"] = str(self.snapshot)
        if self.kind == "judge":
            out |= {"judge": str(self.judge_model), "rubric": str(self.rubric), "threshold": f"{self.threshold:g}"}
        if self.size is not None:
            out["size"] = str(int(self.size))
        return out

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> QueueSource:
        """The inverse of to_query; a ValueError says what is wrong with a hand-edited URL."""
        kind = params.get("source", "filter")
        try:
            flt = ExploreFilter(**json.loads(params["filter"])) if params.get("filter") else ExploreFilter()
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the filter in the link is not a valid Explore filter: {exc}") from None
        try:
            threshold = float(params["threshold"]) if params.get("threshold") not in (None, "") else None
            size = int(params["size"]) if params.get("size") not in (None, "") else None
        except ValueError:
            raise ValueError("threshold must be a number and size a whole number") from None
        return cls(kind=kind, filter=flt, snapshot=params.get("snapshot") or None,
                   judge_model=params.get("judge") or None, rubric=params.get("rubric") or None,
                   threshold=threshold, size=size)

    def tag(self) -> str:
        """What a review made from this queue stores as its source."""
        return f"queue:{self.kind}"


# --------------------------------------------------------------------------------------------
# The queue: a frozen list of targets
# --------------------------------------------------------------------------------------------

TARGET_KINDS = ("response", "instruction", "pair")
DECISION_WORDS = {"accept": "accepted", "reject": "rejected", "tie": "a tie"}


@dataclass(frozen=True)
class Item:
    """One review target of a queue, with the instruction it belongs to (the record shown)."""

    target_id: str
    target_kind: str  # response | instruction | pair
    instruction_id: str

    @property
    def short_id(self) -> str:
        return self.target_id[:8]


@dataclass(frozen=True)
class Action:
    """A button of the queue: its name, its keyboard shortcut and its label (which names the key)."""

    name: str
    shortcut: str
    word: str

    @property
    def key(self) -> str:
        return f"review_{self.name}"

    @property
    def label(self) -> str:
        return f"{self.word} ({self.shortcut})"


# "R" and "C" are Streamlit's own (rerun, clear cache), so reject is X.
ACTIONS = (
    Action("accept", "A", "Accept"),
    Action("reject", "X", "Reject"),
    Action("tie", "T", "Tie"),
    Action("skip", "S", "Skip"),
    Action("edit", "E", "Edit"),
    Action("note", "N", "Note"),
    Action("back", "B", "Back"),
)
ACTION_BY_NAME = {a.name: a for a in ACTIONS}


def _items(rows) -> list[Item]:
    return [Item(str(r["target_id"]), str(r["target_kind"]), str(r["instruction_id"])) for r in rows]


def build(ws, source: QueueSource) -> list[Item]:
    """The queue's targets, at most `source.n`, built once (the page keeps the list frozen so its
    progress counts over a fixed set; "Rebuild queue" builds it again).

    filter: for each instruction the filter matches (Explore's order), its preference pairs if it
    has any, else each response, else the instruction itself. snapshot: the members in member
    order (a response member, or an instruction member's pairs, else the instruction). judge: the
    unlabeled targets of the judge and rubric nearest the threshold, nearest first."""
    if source.kind == "filter":
        return _items(ws.store.filter_targets(source.filter, source.n))
    if source.kind == "snapshot":
        if ws.store.snapshot_row(source.snapshot) is None:
            raise ValueError(f"no snapshot named {source.snapshot!r}")
        return _items(ws.store.snapshot_targets(source.snapshot, source.n))
    candidates = ws.review_candidates(source.judge_model, source.rubric, float(source.threshold), source.n)
    ids = candidates["target_id"].tolist()
    # A pairwise judge's targets are (a, b) orderings, not rows a review can name: left out.
    rows = ws.store.target_rows(ids)
    return _items(rows[i] for i in ids if i in rows)


def decisions(ws, items: list[Item]) -> dict[str, str]:
    """target_id -> current decision for the items that have one (the latest decision wins)."""
    return ws.store.target_decisions([it.target_id for it in items])


def progress(ws, items: list[Item]) -> tuple[int, int]:
    """(done, left): done items have a stored decision, so progress survives a reload."""
    done = len(set(decisions(ws, items)) & {it.target_id for it in items})
    return done, len(items) - done


def next_item(ws, items: list[Item], skipped: set[str] | frozenset[str] = frozenset()) -> Item | None:
    """The first item with no decision that was not skipped (by target id) in this session."""
    decided = decisions(ws, items)
    return next((it for it in items if it.target_id not in decided and it.target_id not in skipped), None)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save(ws, item: Item, decision: str | None, *, reviewer: str | None, source: QueueSource,
         note: str | None = None, edited_text: str | None = None, edit_target: str | None = None) -> list[str]:
    """Store one action on an item; returns the review ids written.

    decision: accept | reject | tie (pairs only) | None (a note alone). edited_text: the edit,
    stored with the decision; on a pair it goes to one of its responses (`edit_target`, the chosen
    one by default), and the decision to the pair. Every row carries the reviewer and the queue's
    source tag."""
    if decision is None and not (note and note.strip()) and not (edited_text and edited_text.strip()):
        raise ValueError("nothing to save: give a decision, a note or an edit")
    tag = source.tag()
    written: list[str] = []
    if edited_text is not None and item.target_kind == "pair":
        pair = next((p for p in ws.store.pairs_for(item.instruction_id) if p["id"] == item.target_id), None)
        if pair is None:
            raise ValueError(f"no preference pair with id {item.target_id!r}")
        side = edit_target or pair["chosen_id"]
        if side not in (pair["chosen_id"], pair["rejected_id"]):
            raise ValueError("edit the pair's chosen or rejected response")
        written.append(ws.review(side, None, edited_text=edited_text, target_kind="response",
                                 reviewer=reviewer, source=tag))
        edited_text = None
    written.append(ws.review(item.target_id, decision, edited_text=edited_text, note=note,
                             target_kind=item.target_kind, reviewer=reviewer, source=tag))
    return written


def latest_review(ws, item: Item) -> dict | None:
    """The newest stored review row of the item's target, with the target's current decision."""
    row = ws.store.latest_review(item.target_id)
    if row is None:
        return None
    return row | {"current_decision": ws.store.target_decisions([item.target_id]).get(item.target_id)}


def saved_line(item: Item, review: dict | None) -> str:
    """"Saved: accepted 1a2b3c4d (pair) by ana": what was stored, read back from the store."""
    if review is None:
        return f"Nothing stored for {item.short_id}"
    what = []
    if review["decision"]:
        what.append(DECISION_WORDS.get(review["decision"], review["decision"]))
    if review["edited_text"]:
        what.append("edited")
    if review["note"]:
        what.append("with a note" if review["decision"] or review["edited_text"] else "a note")
    by = f" by {review['reviewer']}" if review.get("reviewer") else ""
    return f"Saved: {', '.join(what) or 'a review'} {item.short_id} ({item.target_kind}){by}"


# --------------------------------------------------------------------------------------------
# What the page shows for one item
# --------------------------------------------------------------------------------------------


def history_text(history) -> str | None:
    """Earlier chat turns as plain text ("[user]\\n…"), None when there are none."""
    if not history:
        return None
    turns = json.loads(history) if isinstance(history, str) else history
    if not turns:
        return None
    return "\n\n".join(f"[{t.get('role', '?')}]\n{t.get('content', '')}" for t in turns)


def _latest_scores(judgments: list[dict], target_id: str) -> list[dict]:
    """The latest parsed score of each judge and rubric on one target (judgments come newest first)."""
    seen: dict[tuple[str, str], dict] = {}
    for j in judgments:
        key = (j["judge_model"], j["rubric"])
        if j["target_id"] == target_id and j["score"] is not None and key not in seen:
            seen[key] = {"judge": j["judge_model"], "rubric": j["rubric"], "score": float(j["score"]),
                         "scale_max": j["scale_max"]}
    return sorted(seen.values(), key=lambda s: (s["judge"], s["rubric"]))


def scores_text(scores: list[dict]) -> str:
    """"judge-m · pointwise_5: 4/5"; one per line; "no judge score" when there is none."""
    if not scores:
        return "no judge score"
    return "\n".join(f"{s['judge']} · {s['rubric']}: {s['score']:g}" + (f"/{s['scale_max']}" if s["scale_max"] else "")
                     for s in scores)


def record(ws, item: Item) -> dict:
    """Everything the page shows for one item: the instruction (text, input, system, earlier
    turns), every response of it (role, model, text, latest edit, latest score of each judge and
    rubric, current verdict, whether it is the target or a side of the target pair), the pair,
    the current task label and the lineage. Targets come first among the responses."""
    from core import reviews as reviews_mod
    from core import tasks as tasks_mod

    sample = ws.sample(item.instruction_id)
    if sample is None:
        raise ValueError(f"instruction {item.instruction_id!r} is no longer in the workspace")
    ins, reviews, judgments = sample["instruction"], sample["reviews"], sample["judgments"]
    pair = None
    if item.target_kind == "pair":
        pair = next((p for p in sample["pairs"] if p["id"] == item.target_id), None)
        if pair is None:
            raise ValueError(f"no preference pair with id {item.target_id!r}")
        reviews = reviews + ws.store.reviews_for([pair["id"]])
    sides = {pair["chosen_id"]: "chosen", pair["rejected_id"]: "rejected"} if pair else {}

    responses = []
    for r in sample["responses"]:
        verdict = reviews_mod.current_verdict(reviews, r["id"])
        responses.append({
            "id": r["id"], "role": r["role"], "model": r.get("model"), "text": r["text"],
            "edited_text": verdict["edited_text"], "n_chars": r["n_chars"],
            "lineage": {"source_file": r.get("source_file"), "source_line": r.get("source_line"),
                        "round": r.get("round"), "method": r.get("method"), "parent": r.get("parent_id")},
            "scores": _latest_scores(judgments, r["id"]),
            "verdict": verdict, "verdict_text": reviews_mod.describe_verdict(verdict),
            "is_target": r["id"] == item.target_id, "pair_side": sides.get(r["id"]),
        })
    order = {"chosen": 0, "rejected": 1}
    responses.sort(key=lambda r: (not (r["is_target"] or r["pair_side"]), order.get(r["pair_side"] or "", 2)))

    target_verdict = reviews_mod.current_verdict(reviews, item.target_id)
    target_text = None
    if item.target_kind == "response":
        mine = next(r for r in responses if r["is_target"])
        target_text = mine["edited_text"] or mine["text"]
    elif item.target_kind == "instruction":
        target_text = target_verdict["edited_text"] or ins["text"]
    return {
        "item": item,
        "instruction": {"id": ins["id"], "text": ins["text"], "input": ins.get("input") or "",
                        "system": ins.get("system"), "history": history_text(ins.get("history"))},
        "responses": responses,
        "pair": ({"id": pair["id"], "chosen_id": pair["chosen_id"], "rejected_id": pair["rejected_id"],
                  "verdict": target_verdict, "verdict_text": reviews_mod.describe_verdict(target_verdict)}
                 if pair else None),
        "target_verdict": target_verdict,
        "target_verdict_text": reviews_mod.describe_verdict(target_verdict),
        "target_text": target_text,
        "task": tasks_mod.task_of(ws, ins["id"]),
        "lineage": {"dataset": ins.get("dataset"), "source_file": ins.get("source_file"),
                    "source_line": ins.get("source_line"), "round": ins.get("round"), "method": ins.get("method"),
                    "model": ins.get("model"), "parent": ins.get("parent_id")},
    }


def lineage_text(lineage: dict) -> str:
    """"dataset small · pairs.jsonl line 3 · round 0 · import": the fields that are set."""
    parts = []
    if lineage.get("dataset"):
        parts.append(f"dataset {lineage['dataset']}")
    if lineage.get("source_file"):
        name = str(lineage["source_file"]).replace("\\", "/").rsplit("/", 1)[-1]
        line = f" line {lineage['source_line']}" if lineage.get("source_line") is not None else ""
        parts.append(name + line)
    if lineage.get("round") is not None:
        parts.append(f"round {lineage['round']}")
    if lineage.get("method"):
        parts.append(str(lineage["method"]))
    if lineage.get("model"):
        parts.append(f"model {lineage['model']}")
    if lineage.get("parent"):
        parts.append(f"parent {str(lineage['parent'])[:8]}")
    return " · ".join(parts)


TASK_SOURCES = {"import": "imported", "human": "set by a reviewer"}


def task_text(task: dict | None) -> str:
    """"task math (human)"; "no task label" when there is none."""
    if not task or not task.get("task"):
        return "no task label"
    source = task.get("source") or "?"
    confidence = f", {task['confidence']:.2f}" if task.get("confidence") is not None and source != "human" else ""
    return f"task {task['task']} ({TASK_SOURCES.get(source, source)}{confidence})"


# --------------------------------------------------------------------------------------------
# Describing a queue
# --------------------------------------------------------------------------------------------


def describe(source: QueueSource) -> str:
    """One line naming the queue: "filter: unreviewed · datasets small", "snapshot s1", "judge …"."""
    if source.kind == "snapshot":
        return f"snapshot {source.snapshot}"
    if source.kind == "judge":
        return f"judge {source.judge_model} · {source.rubric} · threshold {source.threshold:g}"
    f = source.filter
    parts = [f"{f.review} instructions" if f.review != "any" else "every instruction"]
    for name in ("datasets", "tasks", "roles", "sources", "rounds", "methods"):
        values = getattr(f, name)
        if values:
            parts.append(f"{name} {', '.join(map(str, values))}")
    if f.min_chars is not None or f.max_chars is not None:
        parts.append(f"{f.min_chars or 0}–{f.max_chars if f.max_chars is not None else '∞'} chars")
    if f.search.strip():
        parts.append(f"search {f.search.strip()!r}")
    return "filter: " + " · ".join(parts)


def progress_line(done: int, total: int, skipped: int) -> str:
    """"12 of 20 done · 8 left · 2 skipped" (skipped ones are left too: they have no decision)."""
    line = f"{done} of {total} done · {total - done} left"
    return line + (f" · {skipped} skipped" if skipped else "")


# --------------------------------------------------------------------------------------------
# A judge queue's calibration: the interval narrowing as labels come in
# --------------------------------------------------------------------------------------------


def judge_calibration(ws, source: QueueSource):
    """The judge's calibration at the queue's threshold (core.calibration.Calibration), or None
    for a queue that is not a judge's. No bootstrap: the page needs the precision interval."""
    if source.kind != "judge":
        return None
    return ws.judge_evidence(source.judge_model, source.rubric).calibrate(float(source.threshold), bootstrap=0)


def interval_snapshot(calibration) -> dict:
    """What to remember about a calibration when a queue is built, to compare with later."""
    p = calibration.precision
    return {"n_labels": calibration.n_labels, "half_width": p.half_width if p.n else None}


def narrowing_line(before: dict, calibration) -> str:
    """"precision ± 0.21 → ± 0.15 after 9 labels": the interval when the queue was built and now."""
    p = calibration.precision
    now = f"± {p.half_width:.2f}" if p.n else "unknown"
    then = f"± {before['half_width']:.2f}" if before.get("half_width") is not None else "unknown"
    added = calibration.n_labels - int(before.get("n_labels") or 0)
    return f"precision {then} → {now} after {added} new label{'s' if added != 1 else ''}"
