"""CITING's categories (Feng et al. 2023, arXiv 2310.02527; DESIGN.md §1, issue 14 item 4).

The teacher groups instructions into categories and writes, per category, the criteria an
expert would judge an answer by; every instruction then joins a category, and the revise stage
(core.revise) has the teacher revise the student's answers against their category's criteria.

- **Proposal** (stage `propose_categories`): the teacher sees a seeded sample of instructions,
  numbered, and writes `Category / Description / Criteria / Members` blocks
  (core/prompts/propose_categories.txt). `parse_proposal` is a pure parser: complete blocks are
  kept, an incomplete one (a reply cut off mid-block) is counted as skipped, and a reply with no
  complete block is a parse error with its raw text kept, never a crash. SmolLM2-135M rarely
  writes the format, so a recipe can also give the categories itself (`load_categories`).
- **Categories** are rows of a *scheme* (a round run's name, or one a user makes): name,
  description, criteria, example texts and their origin (teacher, recipe, human). They are
  editable (rename, edit the criteria, delete); an edit makes the origin `human`.
- **Membership**: an instruction joins the category whose seed members have the highest mean
  inner product with its embedding (all-MiniLM, unit vectors, so the mean inner product with the
  members is the inner product with their unnormalised centroid). Seeds are the instructions the
  teacher listed under the category and the recipe's example texts. Only seeds define a category,
  not the instructions assigned later, so the result does not depend on the order instructions
  arrive in. A category with no seed is skipped. The similarity is stored with the membership.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from core import prompts, stages
from core.ids import content_id
from core.judge import format_instruction
from core.llm.base import GenerationParams
from core.stages import Output, Stage, param

PROPOSE_TEMPLATE = "propose_categories"
ORIGINS = ("teacher", "recipe", "human")
MAX_NAME_CHARS = 60
MAX_LINE_CHARS = 400
MAX_CRITERIA = 10
MAX_CATEGORIES = 50
MAX_SAMPLE = 200
MAX_SHOWN_CHARS = 300  # an instruction as the proposal prompt shows it (the task shows in its start)

__all__ = ["Proposal", "ProposedCategory", "add_category", "assign", "assign_vectors", "categories", "centroids",
           "category_id", "criteria_hash", "criteria_text", "delete_category", "load_categories",
           "parse_criteria", "parse_proposal", "update_category", "validate_category"]


# --------------------------------------------------------------------------------------------
# Pure parts: validation, the proposal parser, criteria text
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposedCategory:
    name: str
    description: str
    criteria: tuple[str, ...]
    members: tuple[int, ...] = ()  # 1-based numbers of the instructions shown


@dataclass(frozen=True)
class Proposal:
    categories: tuple[ProposedCategory, ...]
    error: str | None = None  # set exactly when no category parsed
    skipped: int = 0          # blocks without a name or a criterion (e.g. cut off)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> list[dict]:
        return [asdict(c) | {"criteria": list(c.criteria), "members": list(c.members)} for c in self.categories]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def clean_name(text: str) -> str:
    """A category name as stored: markdown emphasis, quotes and trailing punctuation stripped, one
    line, at most MAX_NAME_CHARS (cut at a word)."""
    name = _one_line(re.sub(r"[*_`#]+", "", str(text))).strip(" \"'“”‘’.:;-")
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS].rsplit(" ", 1)[0] or name[:MAX_NAME_CHARS]
    return name


def parse_criteria(value: Any) -> list[str]:
    """Criteria from a list of strings, or from text: one per line (bullets and numbers
    stripped), or separated by semicolons on one line. Empty items dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        lines = [ln for ln in value.replace("\r\n", "\n").split("\n") if ln.strip()]
        items = lines if len(lines) > 1 else (lines[0].split(";") if lines else [])
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"criteria must be a list of strings or text, not {value!r:.200}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a criterion must be text, not {item!r:.200}")
        text = _one_line(re.sub(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s*", "", item)).strip(" ;")
        if text:
            out.append(text)
    return out


def validate_category(d: Mapping, where: str = "category") -> dict:
    """{name, description, criteria, examples} checked: a one-line name of 1–60 characters, a
    one-line description, 1–10 one-line criteria, example texts. Errors name the key and value."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping with name, description, criteria, not {d!r:.200}")
    unknown = sorted(set(map(str, d)) - {"name", "description", "criteria", "examples"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: criteria, description, examples, name")
    raw_name = d.get("name")
    name = clean_name(raw_name) if isinstance(raw_name, str) else ""
    if not name or (isinstance(raw_name, str) and "\n" in raw_name.strip()):
        raise ValueError(f"{where}.name: one line of 1–{MAX_NAME_CHARS} characters, not {raw_name!r}")
    description = d.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_LINE_CHARS or "\n" in description.strip():
        raise ValueError(f"{where}.description: one line of at most {MAX_LINE_CHARS} characters, "
                         f"not {description!r:.200}")
    try:
        criteria = parse_criteria(d.get("criteria"))
    except ValueError as exc:
        raise ValueError(f"{where}.criteria: {exc}") from None
    if not 1 <= len(criteria) <= MAX_CRITERIA:
        raise ValueError(f"{where}.criteria: 1–{MAX_CRITERIA} criteria, not {d.get('criteria')!r:.200}")
    long = next((c for c in criteria if len(c) > MAX_LINE_CHARS), None)
    if long:
        raise ValueError(f"{where}.criteria: a criterion is at most {MAX_LINE_CHARS} characters, not {long!r:.80}")
    examples = d.get("examples") or []
    if not isinstance(examples, list) or any(not isinstance(e, str) or not e.strip() for e in examples):
        raise ValueError(f"{where}.examples: a list of example instructions (text), not {examples!r:.200}")
    return {"name": name, "description": _one_line(description), "criteria": criteria,
            "examples": [e.strip() for e in examples]}


_FIELD = re.compile(r"^\s*[*#>\-\s]*(?:\d{1,2}[.)]\s*)?\**\s*(category|name|description|criteria|criterion|"
                    r"members|instructions)(?:\s*(?:name|\d+))?\s*\**\s*[:：]\s*\**(.*)$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+(.*\S)\s*$")


def parse_proposal(text: str | None, n_shown: int, max_categories: int = MAX_CATEGORIES,
                   max_criteria: int = MAX_CRITERIA) -> Proposal:
    """The categories in a teacher's reply (see the module docstring). A block starts at a
    `Category:` line; `Description:`, `Criteria:` (inline, separated by semicolons, or a bullet
    list below) and `Members:` (numbers from 1 to n_shown; others ignored) follow in any order.
    A block needs a name and a criterion; repeated names keep the first block."""
    if not isinstance(text, str) or not text.strip():
        return Proposal((), "empty reply")
    blocks: list[dict] = []
    current: dict | None = None
    last_field = None
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _FIELD.match(line)
        if match:
            key, value = match.group(1).lower(), match.group(2).strip().rstrip("*").strip()
            if key in ("category", "name") and (current is None or current.get("name") or key == "category"):
                current = {"name": value, "description": "", "criteria": [], "members": []}
                blocks.append(current)
                last_field = "name"
                continue
            if current is None:
                continue
            if key == "name":
                current["name"] = value
            elif key == "description":
                current["description"] = value
            elif key in ("criteria", "criterion"):
                current["criteria"] += parse_criteria(value) if value else []
            else:
                current["members"] += [int(k) for k in re.findall(r"\d+", value)]
            last_field = key
            continue
        bullet = _BULLET.match(line)
        if current is not None and bullet and last_field in ("criteria", "criterion"):
            current["criteria"].append(_one_line(bullet.group(1)))
    categories, seen, skipped = [], set(), 0
    for block in blocks:
        name = clean_name(block["name"])
        criteria = tuple(c for c in parse_criteria(block["criteria"]) if len(c) <= MAX_LINE_CHARS)[:max_criteria]
        if not name or not criteria:
            skipped += 1
            continue
        if name.casefold() in seen or len(categories) >= max_categories:
            continue
        seen.add(name.casefold())
        members = tuple(dict.fromkeys(k for k in block["members"] if 1 <= k <= n_shown))
        categories.append(ProposedCategory(name, _one_line(block["description"])[:MAX_LINE_CHARS], criteria, members))
    if not categories:
        why = (f"{skipped} block(s) without a name or a criterion" if skipped
               else "no 'Category:' line")
        return Proposal((), f"no complete category: {why}", skipped)
    return Proposal(tuple(categories), None, skipped)


def criteria_text(criteria: Sequence[str]) -> str:
    """The criteria as a prompt shows them: one '- ' line each."""
    return "\n".join(f"- {c}" for c in criteria)


def criteria_hash(criteria: Sequence[str]) -> str:
    """What a revision's lineage records: the criteria it was revised against."""
    return content_id("criteria", *criteria)[:12]


def category_id(scheme: str, name: str) -> str:
    return content_id("category", scheme, name.casefold())


# --------------------------------------------------------------------------------------------
# Pure parts: assignment by mean inner product
# --------------------------------------------------------------------------------------------


def centroids(groups: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(category ids, their centroids) from each category's seed vectors (k × d each); a
    category with no vector is left out. mean_j(x · m_j) = x · mean_j(m_j), so the centroid
    (not normalised) gives each instruction's mean inner product with the members at once."""
    ids, rows = [], []
    for cid, vectors in groups.items():
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 2 and vectors.shape[0] > 0:
            ids.append(cid)
            rows.append(vectors.mean(axis=0))
    dim = rows[0].shape[0] if rows else 0
    return ids, np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)


def assign_vectors(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the best centroid, its score) per row of x: the highest mean inner product.
    Ties go to the first category (argmax), so the result is deterministic."""
    x = np.asarray(x, dtype=np.float32)
    if centres.shape[0] == 0:
        raise ValueError("no category has a member to compare with")
    scores = x @ np.asarray(centres, dtype=np.float32).T
    best = scores.argmax(axis=1)
    return best, scores[np.arange(len(best)), best]


# --------------------------------------------------------------------------------------------
# The propose_categories stage
# --------------------------------------------------------------------------------------------


def _check_scheme(scheme) -> str:
    if not isinstance(scheme, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$", scheme):
        raise ValueError(f"scheme must be a name of letters, digits, '.', '_' or '-', not {scheme!r}")
    return scheme


def _int_in(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value


@dataclass(frozen=True)
class ProposeParams:
    model: Any = param(help="the teacher that proposes the categories", short="-m", kind="model",
                       label="Teacher model")
    scheme: str = param("default", "the category scheme the proposal is for (a round run uses its name)",
                        kind="text")
    sample_size: int = param(24, "instructions shown to the teacher (a seeded sample of the selection)", kind="int",
                             minimum=2, maximum=MAX_SAMPLE)
    max_categories: int = param(8, "categories to ask for at most", kind="int", minimum=1, maximum=MAX_CATEGORIES)
    criteria_per_category: int = param(4, "criteria per category", kind="int", minimum=1, maximum=MAX_CRITERIA)
    temperature: float = param(0.0, "sampling temperature (0 = greedy)", kind="float", minimum=0.0, maximum=5.0)
    max_tokens: int = param(512, "tokens of the reply at most", kind="int", minimum=1, maximum=32768)
    seed: int = param(0, "seed of the sample and of sampling", kind="int", minimum=0)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, (str, dict)) and self.model):
            raise ValueError(f"model must be a model name or spec, not {self.model!r}")
        _check_scheme(self.scheme)
        _int_in("sample_size", self.sample_size, 2, MAX_SAMPLE)
        _int_in("max_categories", self.max_categories, 1, MAX_CATEGORIES)
        _int_in("criteria_per_category", self.criteria_per_category, 1, MAX_CRITERIA)
        self.generation()

    def generation(self) -> GenerationParams:
        return GenerationParams(temperature=float(self.temperature), max_tokens=int(self.max_tokens),
                                seed=self.seed, n=1)


def sample_rows(rows: list[dict], size: int, seed: int) -> list[dict]:
    """A seeded sample of `size` rows, in their original order."""
    if len(rows) <= size:
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in keep]


def select_sample(ws, p: ProposeParams, selection, limit: int) -> pa.Table:
    rows = ws.store.instructions_for_job(selection, limit)
    if len(rows) < 2:
        raise ValueError(f"the selection holds {len(rows)} instruction(s); a proposal needs at least 2")
    sample = sample_rows(rows, p.sample_size, p.seed)
    # One input row: the whole sample is one prompt (one shard, one proposal).
    return pa.table({"sample_ids": pa.array([[r["id"] for r in sample]], pa.list_(pa.string())),
                     "texts": pa.array([[format_instruction(r["text"], r.get("input")) for r in sample]],
                                       pa.list_(pa.string()))})


def proposal_prompt(template: prompts.PromptTemplate, texts: Sequence[str], max_categories: int,
                    criteria_per_category: int) -> str:
    shown = []
    for k, text in enumerate(texts, start=1):
        line = _one_line(text)
        shown.append(f"{k}. {line if len(line) <= MAX_SHOWN_CHARS else line[:MAX_SHOWN_CHARS] + ' …'}")
    return template.render(n=len(texts), instructions="\n".join(shown), max_categories=max_categories,
                           criteria_per_category=criteria_per_category)


PROPOSAL_COLUMNS = ("id", "scheme", "model", "job_id", "round", "sample_ids", "raw", "parsed", "parse_error",
                    "call_error", "template_hash", "params")


def run_propose_shard(ctx, rows: pa.Table) -> pa.Table:
    cfg = ctx.config
    params = GenerationParams.from_dict(cfg["params"])
    template = prompts.load(PROPOSE_TEMPLATE)
    model, scheme, round_ = cfg["model"]["name"], cfg["scheme"], int(cfg.get("round", 0))
    items = rows.to_pylist()
    conversations = [[{"role": "user", "content": proposal_prompt(template, it["texts"], cfg["max_categories"],
                                                                  cfg["criteria_per_category"])}] for it in items]
    generations = ctx.backend.generate(conversations, params)
    out: dict[str, list] = {name: [] for name in PROPOSAL_COLUMNS}
    for it, samples in zip(items, generations, strict=True):
        g = samples[0]
        proposal = parse_proposal(g.text, len(it["texts"]), cfg["max_categories"], cfg["criteria_per_category"]) \
            if g.ok else None
        row = {"scheme": scheme, "model": model, "job_id": ctx.job_dir.name, "round": round_,
               "sample_ids": json.dumps(it["sample_ids"]), "raw": g.text or "",
               "parsed": json.dumps(proposal.as_json()) if proposal and proposal.ok else None,
               "parse_error": proposal.error if proposal else None,
               "call_error": None if g.ok else (g.error or g.finish_reason or "call failed"),
               "template_hash": template.hash,
               "params": json.dumps(params.to_dict() | {"skipped": proposal.skipped if proposal else 0,
                                                        "finish_reason": g.finish_reason})}
        row["id"] = content_id("category-proposal", scheme, model, row["job_id"], row["sample_ids"], row["raw"])
        for name in PROPOSAL_COLUMNS:
            out[name].append(row[name])
        ctx.log(f"propose_categories: {len(proposal.categories) if proposal else 0} categories parsed"
                + (f" ({proposal.error})" if proposal and proposal.error else "")
                + (f"; call failed: {row['call_error']}" if row["call_error"] else ""))
    return pa.table(out, schema=pa.schema([(n, pa.int32() if n == "round" else pa.string()) for n in PROPOSAL_COLUMNS]))


def _propose_config(p: ProposeParams) -> dict:
    return {"params": p.generation().to_dict(), "scheme": p.scheme, "max_categories": p.max_categories,
            "criteria_per_category": p.criteria_per_category, "template": PROPOSE_TEMPLATE}


PROPOSE_STAGE = stages.register(Stage(
    name="propose_categories", help="CITING: the teacher groups a sample of instructions into categories and "
                                    "writes evaluation criteria for each",
    params=ProposeParams, select=select_sample, worker="core.categories:run_propose_shard",
    outputs=(Output("category_proposals", PROPOSAL_COLUMNS),), config=_propose_config,
))


# --------------------------------------------------------------------------------------------
# Categories in the catalog: load, edit, assign
# --------------------------------------------------------------------------------------------


def categories(ws, scheme: str) -> list[dict]:
    return ws.store.categories(scheme)


def _existing_names(ws, scheme: str) -> dict[str, str]:
    return {c["name"].casefold(): c["id"] for c in ws.store.categories(scheme)}


def load_categories(ws, scheme: str, given: Sequence[Mapping] = (), *, proposals: bool = True,
                    round: int = 0) -> dict:
    """Store the recipe's categories (origin recipe, their examples as seeds), then merge the
    parsed categories of the scheme's teacher proposals whose names are new (origin teacher,
    the instructions they listed as seed members). Idempotent: a category already there (by
    name, case-folded) is left as it is, edits included. Returns counts."""
    _check_scheme(scheme)
    checked = [validate_category(c, f"categories[{i}]") for i, c in enumerate(given)]
    names = _existing_names(ws, scheme)
    added = {"recipe": 0, "teacher": 0}
    seeds: list[dict] = []
    rows: list[dict] = []
    for c in checked:
        if c["name"].casefold() in names:
            continue
        cid = category_id(scheme, c["name"])
        names[c["name"].casefold()] = cid
        rows.append(c | {"id": cid, "scheme": scheme, "origin": "recipe"})
        added["recipe"] += 1
    found = ws.store.category_proposals(scheme) if proposals else []
    parse_errors = sum(1 for p in found if p["parsed"] is None)
    seeded: set[str] = set()
    for prop in found:
        for c in prop["parsed"] or []:
            name = clean_name(c["name"])
            if not name or name.casefold() in names:
                continue
            cid = category_id(scheme, name)
            names[name.casefold()] = cid
            rows.append({"id": cid, "scheme": scheme, "name": name, "description": c.get("description") or "",
                         "criteria": list(c["criteria"]), "examples": [], "origin": "teacher",
                         "proposal_id": prop["id"]})
            added["teacher"] += 1
            for k in c.get("members") or []:
                iid = prop["sample_ids"][k - 1]
                if iid not in seeded:  # the first category that lists an instruction keeps it
                    seeded.add(iid)
                    seeds.append({"instruction_id": iid, "category_id": cid, "similarity": None, "source": "seed",
                                  "round": round})
    with ws.store.transaction() as cur:
        for row in rows:
            ws.store.insert_category(cur, row)
        ws.store.set_memberships(cur, scheme, seeds)
    return {"added": added, "proposals": len(found), "proposal_parse_errors": parse_errors,
            "seed_members": len(seeds), "categories": len(names)}


def add_category(ws, scheme: str, name: str, description: str, criteria, origin: str = "human",
                 examples: Sequence[str] = ()) -> dict:
    """A new category (a human's, by default); its name must be new in the scheme."""
    _check_scheme(scheme)
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
    c = validate_category({"name": name, "description": description, "criteria": criteria,
                           "examples": list(examples)})
    if c["name"].casefold() in _existing_names(ws, scheme):
        raise ValueError(f"scheme {scheme!r} has a category named {c['name']!r} already")
    row = c | {"id": category_id(scheme, c["name"]), "scheme": scheme, "origin": origin}
    with ws.store.transaction() as cur:
        ws.store.insert_category(cur, row)
    return ws.store.category(row["id"])


def update_category(ws, cid: str, *, name: str | None = None, description: str | None = None,
                    criteria=None) -> dict:
    """Rename a category and/or edit its description or criteria (text: one criterion a line).
    The id stays (members and revisions keep their lineage); the origin becomes `human`."""
    row = ws.store.category(cid)
    if row is None:
        raise ValueError(f"no category with id {cid!r}")
    c = validate_category({"name": row["name"] if name is None else name,
                           "description": row["description"] if description is None else description,
                           "criteria": row["criteria"] if criteria is None else criteria})
    if c["name"].casefold() != row["name"].casefold() and c["name"].casefold() in _existing_names(ws, row["scheme"]):
        raise ValueError(f"scheme {row['scheme']!r} has a category named {c['name']!r} already")
    changed = (c["name"], c["description"], c["criteria"]) != (row["name"], row["description"], row["criteria"])
    if changed:
        ws.store.update_category(cid, c["name"], c["description"], c["criteria"], "human")
    return ws.store.category(cid)


def delete_category(ws, cid: str) -> None:
    if ws.store.category(cid) is None:
        raise ValueError(f"no category with id {cid!r}")
    ws.store.delete_category(cid)


def _seed_vectors(ws, scheme: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Each category's seed vectors (seed members' texts and example texts) and the seed rows."""
    cats = ws.store.categories(scheme)
    seeds = ws.store.category_seed_texts(scheme)
    texts: dict[str, list[str]] = {c["id"]: list(c["examples"]) for c in cats}
    for s in seeds:
        if s["category_id"] in texts:
            texts[s["category_id"]].append(format_instruction(s["text"], s["input"]))
    everything = [t for ts in texts.values() for t in ts]
    vectors = ws.embed(everything) if everything else np.zeros((0, 0), dtype=np.float32)
    groups, at = {}, 0
    for cid, ts in texts.items():
        groups[cid] = vectors[at:at + len(ts)]
        at += len(ts)
    return groups, seeds


def assign(ws, scheme: str, selection, *, round: int = 0, limit: int = 1_000_000) -> dict:
    """Every selected instruction without a category of the scheme joins the one whose seeds it
    is closest to on average (mean inner product of MiniLM vectors), similarity stored; seed
    members get their similarity to their own category too. Returns counts per category."""
    groups, seeds = _seed_vectors(ws, scheme)
    ids, centres = centroids(groups)
    cats = {c["id"]: c for c in ws.store.categories(scheme)}
    skipped = sorted(cats[c]["name"] for c in cats if c not in ids)
    if not ids:
        raise ValueError(f"no category of scheme {scheme!r} has a member or an example to compare with"
                         + (f" ({len(cats)} categories, none with a seed)" if cats else " (it has no category)"))
    position = {cid: k for k, cid in enumerate(ids)}
    seed_rows = []
    if seeds:
        seed_vecs = ws.embed([format_instruction(s["text"], s["input"]) for s in seeds])
        for s, vec in zip(seeds, seed_vecs, strict=True):
            if s["category_id"] in position:
                sim = float(vec @ centres[position[s["category_id"]]])
                seed_rows.append({"instruction_id": s["instruction_id"], "category_id": s["category_id"],
                                  "similarity": sim, "source": "seed", "round": round})
    todo = ws.store.unassigned_instructions(selection, scheme, limit)
    rows = []
    if todo:
        x = ws.embed([format_instruction(t["text"], t["input"]) for t in todo])
        best, sims = assign_vectors(x, centres)
        rows = [{"instruction_id": t["id"], "category_id": ids[b], "similarity": float(s), "source": "assigned",
                 "round": round} for t, b, s in zip(todo, best, sims, strict=True)]
    with ws.store.transaction() as cur:
        ws.store.set_memberships(cur, scheme, seed_rows + rows)
    counts = {c["name"]: int(c["members"]) for c in ws.store.categories(scheme)}
    return {"assigned": len(rows), "seeds": len(seed_rows), "skipped_categories": skipped, "members": counts}
