"""CITING (Feng et al. 2023, "Citing: Large Language Models Create Curriculum for Instruction
Tuning", arXiv 2310.02527; DESIGN.md §1, §6), one round, from the student it starts with to the next.

    1. Round 1: the teacher groups a sample of the pool into categories and writes evaluation
       criteria for each (stage propose_categories), merged with the recipe's own categories;
       every pool instruction joins the category whose seeds it is closest to (core.categories).
    2. The round's student answers the pool.
    3. The teacher revises each answer against its category's criteria (stage revise).
    4. The training set holds both modes: direct (instruction → revision) and revision
       (instruction + criteria + draft → revision), one sft snapshot over the round's revision role.
    5. The student is trained into the round's model (the next round's student).
    6. Evaluation against the start model on the held-out prompts (win rate), plus CITING's
       aspects: clarity, depth and comprehensiveness of both models' held-out answers, each a
       pointwise 1–10 rubric of its own (clarity_10, depth_10, comprehensiveness_10) so a small
       judge can score it in probability mode.

The paper saw quality fall after the third round: recipes/citing.yaml stops at 3.

The recipe's section:

    citing:
      categories:             # optional: given categories (origin recipe); examples are their seeds
        - {name: Math, description: "...", criteria: ["...", "..."], examples: ["...", "..."]}
      propose: true           # ask the teacher for categories too (merged when its reply parses)
      sample_size: 24         # instructions the teacher sees for its proposal
      max_categories: 8
      criteria_per_category: 4
      propose_max_tokens: 512
      modes: [direct, revision]
      max_revision_tokens: 512
      keep_cut_off: false     # a revision that hits max_revision_tokens is dropped (too long), unless true
      aspects: [clarity, depth, comprehensiveness]
      select: null            # or {mfd_min: 1.0}: revise only what the student has not learned yet

Recipes compose: with `select: {mfd_min: δ}` a round first measures TAPIR's difficulty (the
teacher answers the pool once, the judge scores both answers with the recipe's pointwise rubric,
MFD = judge(teacher) − judge(student), core.difficulty) and the teacher revises only the
instructions with MFD > δ: TAPIR picks the seeds, CITING's criteria improve them
(recipes/citing-tapir-tiny.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core import categories as categories_mod
from core.categories import validate_category
from core.recipes import RecipeError
from core.revise import MODES, drop_counts
from core.rounds import Round, RoundFailed, RoundResult, eval_summary, json_safe
from core.selection import ExploreFilter

STUDENT = "student"
ASPECT_RUBRICS = {"clarity": "clarity_10", "depth": "depth_10", "comprehensiveness": "comprehensiveness_10"}
DEFAULTS = {"categories": [], "propose": True, "sample_size": 24, "max_categories": 8, "criteria_per_category": 4,
            "propose_max_tokens": 512, "modes": list(MODES), "max_revision_tokens": 512, "keep_cut_off": False,
            "aspects": list(ASPECT_RUBRICS), "select": None}
TEACHER = "teacher"

__all__ = ["ASPECT_RUBRICS", "DEFAULTS", "citing_round", "parse_section", "revision_role", "round_function"]


def _bad(key: str, what: str, value) -> RecipeError:
    return RecipeError(f"citing.{key}: expected {what}, not {value!r}")


def _int(d: Mapping, key: str, low: int, high: int) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(key, f"an integer from {low} to {high}", value)
    return value


def _choices(d: Mapping, key: str, known) -> list[str]:
    value = d[key]
    if not isinstance(value, list) or not value or any(v not in known for v in value):
        raise _bad(key, f"a non-empty list of {', '.join(known)}", value)
    return list(dict.fromkeys(value))


def parse_section(section: Mapping) -> tuple[dict, dict]:
    """The recipe's `citing:` section validated, defaults filled in; errors name key and value."""
    unknown = sorted(set(map(str, section)) - set(DEFAULTS))
    if unknown:
        raise RecipeError(f"citing: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    d = DEFAULTS | dict(section)
    given = d["categories"] if d["categories"] is not None else []
    if not isinstance(given, list):
        raise _bad("categories", "a list of {name, description, criteria, examples}", given)
    cats = []
    for i, c in enumerate(given):
        try:
            cats.append(validate_category(c, f"citing.categories[{i}]"))
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
    names = [c["name"].casefold() for c in cats]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecipeError(f"citing.categories: names must be unique; repeated: {', '.join(repeated)}")
    for key in ("propose", "keep_cut_off"):
        if not isinstance(d[key], bool):
            raise _bad(key, "true or false", d[key])
    if not d["propose"] and not cats:
        raise RecipeError("citing.propose: false needs citing.categories (some categories to assign the pool to), "
                          "not an empty list")
    if not d["propose"] and not any(c["examples"] for c in cats):
        raise RecipeError("citing.categories: without a proposal, at least one category needs examples (its seeds)")
    params = {"categories": cats, "propose": d["propose"], "keep_cut_off": d["keep_cut_off"],
              "sample_size": _int(d, "sample_size", 2, categories_mod.MAX_SAMPLE),
              "max_categories": _int(d, "max_categories", 1, categories_mod.MAX_CATEGORIES),
              "criteria_per_category": _int(d, "criteria_per_category", 1, categories_mod.MAX_CRITERIA),
              "propose_max_tokens": _int(d, "propose_max_tokens", 1, 32768),
              "max_revision_tokens": _int(d, "max_revision_tokens", 1, 32768),
              "modes": _choices(d, "modes", MODES), "aspects": _choices(d, "aspects", tuple(ASPECT_RUBRICS)),
              "select": _select(d["select"])}
    return params, {}


def _select(value) -> dict | None:
    """`select: {mfd_min: δ}`: revise only the instructions whose MFD is above δ (TAPIR's seeds)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(map(str, value)) != {"mfd_min"}:
        raise _bad("select", "null or {mfd_min: <number>}", value)
    delta = value["mfd_min"]
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta != delta or abs(delta) == float("inf"):
        raise _bad("select.mfd_min", "a number", delta)
    return {"mfd_min": float(delta)}


def revision_role(run: str, number: int) -> str:
    """The role of round `number`'s revisions in `run`: a role per round and run, so a round's
    snapshot holds its own revisions only (a valid response role)."""
    slug = re.sub(r"[^a-z0-9]+", "_", run.lower()).strip("_")
    return f"rev{int(number)}_{slug}"[:32].rstrip("_")


# --------------------------------------------------------------------------------------------
# The round
# --------------------------------------------------------------------------------------------


def citing_round(r: Round) -> RoundResult:
    """CITING, one round (see the module's docstring)."""
    from core.evaluate import answer_role

    ws, rc, c, n = r.ws, r.recipe, r.recipe.params, r.number
    scheme, limit = rc.name, rc.limit or 1_000_000
    pool = ExploreFilter(datasets=list(rc.pool))
    if rc.limit:  # the pool's first N instructions, as the generate steps read it
        pool = ExploreFilter(ids=[row["id"] for row in ws.store.instructions_for_job(pool, rc.limit)])

    # 1. Categories (round 1): the teacher's proposal over a sample of the pool, merged with the
    #    recipe's categories; then every pool instruction joins its nearest category (each round,
    #    so instructions added to the pool later get one too; the assigned ones keep theirs).
    if n == 1:
        if c["propose"]:
            r.job("propose categories", "propose_categories",
                  {"model": rc.teacher, "scheme": scheme, "sample_size": c["sample_size"],
                   "max_categories": c["max_categories"], "criteria_per_category": c["criteria_per_category"],
                   "max_tokens": c["propose_max_tokens"], "seed": int(rc.generate.get("seed") or 0)}, pool,
                  limit=limit)
        r.compute("categories", lambda: categories_mod.load_categories(ws, scheme, c["categories"],
                                                                       proposals=c["propose"], round=n))
    assigned = r.compute("assign pool", lambda: categories_mod.assign(ws, scheme, pool, round=n, limit=limit))

    # 2. The round's student answers the pool.
    r.generate("student answers", r.student, STUDENT, pool, round=n)
    selected = None
    if c["select"] is not None:  # TAPIR's difficulty picks what the teacher revises
        pool, selected = _hard_instructions(r, pool, c["select"]["mfd_min"])

    # 3. The teacher revises each answer against its category's criteria, writing both modes.
    role, revision_dataset = revision_role(rc.name, n), r.name("revision")
    todo = ws.store.drafts_to_revise(pool, scheme, STUDENT, n, role, 1)
    revised = r.job("revise answers", "revise",
                    {"model": rc.teacher, "scheme": scheme, "role": STUDENT, "draft_round": n, "out_role": role,
                     "modes": c["modes"], "revision_dataset": revision_dataset,
                     "max_tokens": c["max_revision_tokens"], "keep_cut_off": c["keep_cut_off"],
                     "temperature": float(rc.generate.get("temperature", 0)),
                     "seed": rc.generate.get("seed")}, pool, needed=bool(todo), limit=limit)
    counts = r.compute("revision counts", lambda: drop_counts(ws.job_dir(revised.job)) if revised.job
                       else {"kept": 0, "dropped": {}})
    if not counts["kept"]:
        raise RoundFailed(f"round {n}: the teacher kept no revision ({counts['dropped'] or 'no draft to revise'}); "
                          "raise citing.max_revision_tokens or check the teacher")

    # 4. One sft snapshot with both modes: the pool's instructions → revision (direct) and the
    #    revision-mode instructions → revision.
    datasets = list(rc.pool) + ([revision_dataset] if "revision" in c["modes"] else [])
    train = r.snapshot("training set", r.name("train"), {"kind": "sft", "datasets": datasets, "roles": [role]})
    per_mode = r.compute("modes", lambda: {"direct": _count(ws, list(rc.pool), role),
                                           "revision": _count(ws, [revision_dataset], role)
                                           if "revision" in c["modes"] else 0})

    # 5. SFT: the student is trained into this round's model.
    model = r.train("train", r.model_name, train["snapshot"], dict(rc.train), base=r.student)

    # 6. Evaluation against the start model (win rate), then CITING's aspects on the same answers.
    ev = r.evaluate("evaluate", model, r.student)
    heldout_ids = ws.store.eval_prompt_ids(ws.store.dataset_id(rc.heldout), rc.evaluate.get("limit") or 1_000_000)
    roles = [answer_role(model), answer_role(r.student)]
    mode = None if rc.judge_mode == "auto" else rc.judge_mode
    for aspect in c["aspects"]:
        rubric = ASPECT_RUBRICS[aspect]
        r.job(f"judge {aspect}", "judge",
              {"model": rc.eval_judge, "rubric": rubric, "roles": roles, "mode": rc.judge_mode, "unjudged": True},
              ExploreFilter(ids=heldout_ids),
              needed=bool(ws.store.count_unjudged(heldout_ids, roles, rc.eval_judge, rubric, mode)))
    aspects = r.compute("aspect scores", lambda: aspect_scores(ws, heldout_ids, {model: roles[0],
                                                                                 r.student: roles[1]},
                                                               rc.eval_judge, c["aspects"], mode))

    metrics = {"scheme": scheme, "selected": selected, "categories": len(assigned["members"]), "members": assigned["members"],
               "assigned": assigned["assigned"], "skipped_categories": assigned["skipped_categories"],
               "revision_role": role, "revisions": counts, "modes": per_mode, "train_members": train["members"],
               "aspects": aspects, "evaluation": eval_summary(ev), "lineage": ws.model_lineage(model)}
    return RoundResult(model, train["snapshot"], json_safe(metrics))


def _hard_instructions(r: Round, pool: ExploreFilter, delta: float) -> tuple[ExploreFilter, dict]:
    """TAPIR's steps 1–2 inside a CITING round: the teacher's answers (round 0, once), the judge's
    scores of both, MFD per instruction, and the instructions with MFD > δ as the new pool."""
    from core.difficulty import compute_mfd, mfd_source
    from core.rounds import unjudged

    ws, rc, n = r.ws, r.recipe, r.number
    mode = None if rc.judge_mode == "auto" else rc.judge_mode
    r.generate("teacher answers", rc.teacher, TEACHER, pool, round=0)
    r.job("judge answers", "judge", {"model": rc.judge, "rubric": rc.rubric, "roles": [TEACHER, STUDENT],
                                     "mode": rc.judge_mode, "unjudged": True}, pool,
          needed=unjudged(ws, pool, rc, [(TEACHER, 0), (STUDENT, n)]))
    mfd = r.compute("mfd", lambda: compute_mfd(ws, rc.judge, rc.rubric, TEACHER, STUDENT, n, pool, limit=rc.limit,
                                               mode=mode, teacher_round=0).as_dict())
    source = mfd_source(rc.judge, rc.rubric, mode=mode)
    seeds = r.snapshot("hard instructions", r.name("hard"), {
        "kind": "prompts", "roles": [], "datasets": list(rc.pool), "mfd_min": delta,
        "difficulty": {"round": n, "mfd_source": source}})
    if not seeds["members"]:
        raise RoundFailed(f"round {n}: no instruction has MFD > {delta} ({mfd['computed']} with a value): the student "
                          "fits the pool already, or lower citing.select.mfd_min")
    in_pool = set(_pool_ids(ws, pool))
    ids = [i for i in _member_ids(seeds["parquet"]) if i in in_pool]
    return ExploreFilter(ids=ids), {"mfd_min": delta, "instructions": len(ids), "mfd": mfd}


def _member_ids(parquet: str) -> list[str]:
    import pyarrow.parquet as pq

    return list(dict.fromkeys(pq.read_table(parquet, columns=["instruction_id"]).column("instruction_id").to_pylist()))


def _pool_ids(ws, pool: ExploreFilter) -> list[str]:
    return [row["id"] for row in ws.store.instructions_for_job(pool, 1_000_000)]


def _count(ws, datasets: list[str], role: str) -> int:
    from core import curate

    if any(ws.store.dataset_id(d) is None for d in datasets):
        return 0
    return curate.counts(ws, {"kind": "sft", "datasets": datasets, "roles": [role]}).after


def aspect_scores(ws, instruction_ids: list[str], roles: dict[str, str], judge: str, aspects: list[str],
                  mode: str | None) -> dict:
    """{model: {aspect: mean score, n_<aspect>: answers scored}} on the held-out answers."""
    out = {}
    for model, role in roles.items():
        row = {}
        for aspect in aspects:
            mean, k = ws.store.mean_score(instruction_ids, role, judge, ASPECT_RUBRICS[aspect], mode)
            row[aspect], row[f"n_{aspect}"] = mean, k
        out[model] = row
    return out


round_function = citing_round
