"""Humpback, instruction backtranslation (Li et al. 2023, arXiv 2308.06259), as a recipe's round.

    humpback:
      seed: [humpback-seed]       # seed pair datasets (default: the recipe's data.pool)
      seed_role: seed             # the seed answers' response role
      corpus: [humpback-corpus]   # unlabelled documents (imported from data.files when missing)
      limit: null                 # documents to backtranslate at most (null: all)
      k: 4.5                      # keep a candidate whose curator score is ≥ k
      curator: self               # self: the round's current model (M0 in round 1), or a model name
      rubric: pointwise_5         # the paper's 5-point rubric
      mode: probability           # the expectation Σ k·p(k) of the score (k 4.5 then, DESIGN §6)
      backward_model: null        # null: train one on the reversed seed pairs (once, in round 1)
      backward_base: null         # the backward model's base (null: models.student, as the paper)
      backward_train: {}          # train settings of the backward model over the recipe's train
      train_from: base            # each forward model from the base model (the paper), or previous
      on_empty: seed_only         # a round whose curator keeps nothing: seed_only (recorded) or fail
      tags: {seed: "...", augmented: "..."}   # the system tags of the two sources
      sampling: {temperature: 0.7, top_p: 0.9, max_tokens: 96, seed: 0}

The models: the recipe's `models.student` is the base model of both directions (backward_base
may name another one for the backward model). The backward model
is trained once on the reversed seed (and reused by later rounds, as the paper does); in round 1
the self-curator M0 is the base trained on the seed alone. Round r: the current model rates every
candidate (round r ≥ 2: the model round r − 1 trained, a new judge, so new scores), the candidates
scoring ≥ k join the seed with their own system tag, and the base is trained on both into M_r.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.backtranslate import CANDIDATE_ROLE, drop_counts, keep_candidates, write_backward_data
from core.recipes import RecipeError
from core.rounds import Round, RoundFailed, RoundResult, eval_summary, json_safe
from core.selection import ExploreFilter

# The paper's tags, in our words (DESIGN §6).
SEED_TAG = "Answer in the style of an AI assistant."
AUGMENTED_TAG = "Answer with knowledge from web search."
DEFAULTS = {
    "seed": None, "seed_role": "seed", "corpus": None, "limit": None, "k": 4.5, "curator": "self",
    "rubric": "pointwise_5", "mode": "probability", "backward_model": None, "backward_base": None,
    "backward_train": {}, "train_from": "base",
    "on_empty": "seed_only", "tags": {"seed": SEED_TAG, "augmented": AUGMENTED_TAG},
    "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 96, "seed": 0},
}
ON_EMPTY = ("seed_only", "fail")
TRAIN_FROM = ("base", "previous")


def _names(path: str, value, optional: bool = False) -> list[str] | None:
    if value is None and optional:
        return None
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or any(not isinstance(v, str) or not v.strip() for v in value):
        raise RecipeError(f"{path}: a dataset name or a list of them, not {value!r}")
    return list(value)


def parse_section(section: Mapping) -> tuple[dict, dict]:
    """The `humpback:` section validated, defaults filled; (params, {key path: model name})."""
    from core import judge
    from core.stages import check_role

    unknown = sorted(set(map(str, section)) - set(DEFAULTS))
    if unknown:
        raise RecipeError(f"humpback: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    p = {key: section.get(key, default) for key, default in DEFAULTS.items()}
    p["seed"] = _names("humpback.seed", p["seed"], optional=True)
    p["corpus"] = _names("humpback.corpus", p["corpus"])
    try:
        check_role(p["seed_role"], "seed role")
    except ValueError as exc:
        raise RecipeError(f"humpback.seed_role: {exc}") from None
    if p["limit"] is not None and (isinstance(p["limit"], bool) or not isinstance(p["limit"], int) or p["limit"] < 1):
        raise RecipeError(f"humpback.limit: an integer ≥ 1 or null, not {p['limit']!r}")
    try:
        rubric = judge.get_rubric(p["rubric"])
    except ValueError as exc:
        raise RecipeError(f"humpback.rubric: {exc}") from None
    if rubric.kind != "pointwise" or not rubric.higher_is_better:
        raise RecipeError(f"humpback.rubric: a pointwise rubric that rates each candidate, not {p['rubric']!r}")
    if p["mode"] not in ("auto", "probability", "generate"):
        raise RecipeError(f"humpback.mode: auto, probability or generate, not {p['mode']!r}")
    if p["mode"] != "auto":
        try:
            judge.check_mode(rubric, p["mode"])
        except ValueError as exc:
            raise RecipeError(f"humpback.mode: {exc}") from None
    k = p["k"]
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not rubric.scale_min <= k <= rubric.scale_max:
        raise RecipeError(f"humpback.k: a score in [{rubric.scale_min}, {rubric.scale_max}] ({rubric.name}), not {k!r}")
    p["k"] = float(k)
    for key in ("curator", "backward_model", "backward_base"):
        value = p[key]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise RecipeError(f"humpback.{key}: a model name{' or self' if key == 'curator' else ' or null'}, "
                              f"not {value!r}")
    if p["curator"] is None:
        raise RecipeError("humpback.curator: self or a model name, not None")
    for key, choices in (("train_from", TRAIN_FROM), ("on_empty", ON_EMPTY)):
        if p[key] not in choices:
            raise RecipeError(f"humpback.{key}: one of {', '.join(choices)}, not {p[key]!r}")
    tags = section.get("tags") or {}
    if not isinstance(tags, Mapping) or set(tags) - {"seed", "augmented"}:
        raise RecipeError(f"humpback.tags: a mapping with seed and augmented, not {tags!r}")
    p["tags"] = DEFAULTS["tags"] | dict(tags)
    for key, tag in p["tags"].items():
        if tag is not None and (not isinstance(tag, str) or not tag.strip()):
            raise RecipeError(f"humpback.tags.{key}: a system tag (text) or null, not {tag!r}")
    sampling = section.get("sampling") or {}
    if not isinstance(sampling, Mapping) or set(sampling) - set(DEFAULTS["sampling"]):
        raise RecipeError(f"humpback.sampling: keys {', '.join(DEFAULTS['sampling'])}, not {sampling!r}")
    p["sampling"] = DEFAULTS["sampling"] | dict(sampling)
    try:  # the stage's own checks of the sampling values
        from core.backtranslate import BacktranslateParams

        BacktranslateParams(model="placeholder", out_dataset="placeholder", **p["sampling"])
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"humpback.sampling: {exc}") from None
    models = {}
    if p["curator"] != "self":
        models["humpback.curator"] = p["curator"]
    if p["backward_model"] is not None:
        models["humpback.backward_model"] = p["backward_model"]
    if p["backward_base"] is not None:
        models["humpback.backward_base"] = p["backward_base"]
    if not isinstance(p["backward_train"], Mapping) or "base_model" in p["backward_train"]:
        raise RecipeError(f"humpback.backward_train: train settings without base_model (that is backward_base), "
                          f"not {p['backward_train']!r}")
    p["backward_train"] = dict(p["backward_train"])
    try:
        from core.train.config import TrainConfig

        TrainConfig.from_dict(p["backward_train"] | {"base_model": "placeholder"})
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"humpback.backward_train: {exc}") from None
    return p, models


# --------------------------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------------------------


def humpback_round(r: Round) -> RoundResult:
    """Humpback, one iteration: backward model (once) → self-augment (once) → self-curate with the
    current model → train the forward model on seed + kept candidates → evaluate."""
    ws, rc, h, n = r.ws, r.recipe, r.recipe.params, r.number
    seed = h["seed"] or list(rc.pool)
    candidates = f"{rc.name}-candidates"
    mode = None if h["mode"] == "auto" else h["mode"]
    r.compute("import corpus", lambda: _import_corpus(ws, rc, h["corpus"]))

    # 1. The backward model p(x | y): the base trained on the reversed seed pairs, once for the run.
    backward = h["backward_model"] or f"{rc.name}-backward"
    if h["backward_model"] is None and ws.store.model_spec(backward) is None:
        r.compute("backward data", lambda: write_backward_data(ws, seed, h["seed_role"], f"{rc.name}-backward"))
        pairs = r.snapshot("backward snapshot", f"{rc.name}-backward", {
            "kind": "sft", "datasets": [f"{rc.name}-backward"], "roles": ["backward"]})
        r.train("train backward", backward, pairs["snapshot"], dict(rc.train) | h["backward_train"],
                base=h["backward_base"] or rc.student)

    # 2. Self-augment: the backward model writes an instruction for every document (T 0.7, top-p
    #    0.9); the candidates are made once and re-curated by every later round.
    corpus = ExploreFilter(datasets=list(h["corpus"]))
    #    (A document whose output was dropped is not retried: the same seed samples the same text.)
    todo = n == 1 and ws.store.documents_to_backtranslate(h["corpus"], _dataset_id(candidates), backward, 1) \
        if ws.store.round_step(r.id, "backtranslate") is None else True
    r.job("backtranslate", "backtranslate", {"model": backward, "out_dataset": candidates} | h["sampling"], corpus,
          needed=bool(todo), limit=h["limit"] or 1_000_000)
    augment = r.compute("augment counts", lambda: _augment_counts(ws, r, candidates))

    # 3. Self-curate: the current model rates each candidate on the 5-point rubric. Round 1's is
    #    M0, the base trained on the seed alone; a later round's is the model the last one trained.
    seed_spec = _training_spec(seed, h, kept=None)
    m0 = None
    if h["curator"] != "self":
        curator = h["curator"]
    elif n == 1:
        seed_only = r.snapshot("seed snapshot", f"{rc.name}-seed", seed_spec)
        m0 = curator = r.train("train M0", f"{rc.name}-m0", seed_only["snapshot"], dict(rc.train), base=rc.student)
    else:
        curator = r.student
    pool = ExploreFilter(datasets=[candidates])
    unjudged = ws.store.responses_for_judge(pool, [CANDIDATE_ROLE], 1, unjudged_by=(curator, h["rubric"], mode))
    r.job("curate", "judge", {"model": curator, "rubric": h["rubric"], "roles": [CANDIDATE_ROLE], "mode": h["mode"],
                              "unjudged": True}, pool, needed=bool(unjudged))
    kept_dataset = r.name("kept")
    curation = r.compute("keep", lambda: keep_candidates(ws, [candidates], curator, h["rubric"], mode, h["k"],
                                                         kept_dataset, n) | {"curator": curator})
    empty = None
    if not curation["kept"]:
        empty = (f"the curator {curator} scored no candidate ≥ k = {h['k']:g} (mean score "
                 f"{_fmt(curation['mean_score'])}, best {_fmt(curation['max_score'])} on {curation['judged']} judged): "
                 "a small model rarely gives a top rating; lower humpback.k or curate with a stronger model")
        if h["on_empty"] == "fail":
            raise RoundFailed(f"round {n}: {empty}")

    # 4. The curated set: the seed with its tag, the kept candidates with theirs (one snapshot).
    train = r.snapshot("curated set", r.name("train"), _training_spec(seed, h, kept=kept_dataset))

    # 5. The forward model M_r, from the base (the paper) or from the last round's model.
    base = rc.student if h["train_from"] == "base" else r.student
    model = r.train("train", r.model_name, train["snapshot"], dict(rc.train), base=base)

    # 6. Evaluation against the model the round improves on: M0 (seed only) in round 1, else the last.
    baseline = m0 or r.student
    ev = r.evaluate("evaluate", model, baseline)

    metrics = {
        "k": h["k"], "curator": curator, "rubric": h["rubric"], "mode": h["mode"], "backward_model": backward,
        "candidates": curation["candidates"], "judged": curation["judged"], "kept": curation["kept"],
        "kept_share": curation["kept_share"], "curator_mean_score": curation["mean_score"],
        "near_k": curation["near_k"], "kept_none": empty, "augment": augment, "seed_only_model": m0,
        "train_members": train["members"], "baseline": baseline, "evaluation": eval_summary(ev),
        "lineage": ws.model_lineage(model),
    }
    return RoundResult(model, train["snapshot"], json_safe(metrics))


round_function = humpback_round


def _training_spec(seed: list[str], h: dict, kept: str | None) -> dict:
    datasets = list(seed) + ([kept] if kept else [])
    rules = [{"when": {"datasets": list(seed)}, "tag": h["tags"]["seed"]}] if h["tags"]["seed"] else []
    if kept and h["tags"]["augmented"]:
        rules.append({"when": {"datasets": [kept]}, "tag": h["tags"]["augmented"]})
    roles = list(dict.fromkeys([h["seed_role"]] + ([CANDIDATE_ROLE] if kept else [])))
    return {"kind": "sft", "datasets": datasets, "roles": roles, "system_tags": {"rules": rules}}


def _dataset_id(name: str) -> str:
    from core.ids import content_id

    return content_id("dataset", name)


def _import_corpus(ws, rc, corpus: list[str]) -> dict:
    """Import each corpus dataset that is missing from the recipe's data.files (a folder or files)."""
    from pathlib import Path

    done = {}
    for name in corpus:
        if ws.store.dataset_id(name) is not None:
            continue
        path = rc.files.get(name)
        if path is None:
            raise RoundFailed(f"humpback.corpus: dataset {name!r} is not in this workspace and data.files names "
                              "no file or folder for it")
        if not Path(path).exists():
            raise RoundFailed(f"data.files.{name}: no file or folder {path}")
        summary = ws.import_paths([path], name, fmt="corpus")
        done[name] = summary.n_new
    return {"imported": done}


def _augment_counts(ws, r: Round, candidates: str) -> dict:
    """What self-augment made: candidates, and the drops with their reasons (from this round's
    job; a later round reuses the candidates and says so)."""
    step = ws.store.round_step(r.id, "backtranslate")
    job = step and step.get("job_id")
    counts = ws.store.curation_counts([candidates], CANDIDATE_ROLE, "", "", None, 0)
    out = {"candidates": counts["candidates"], "job": job, "reused": job is None}
    if job:
        out["dropped"] = drop_counts(ws.job_dir(job))
    return out


def _fmt(x) -> str:
    return "none" if x is None else f"{x:.2f}"
