"""Zephyr (Tunstall et al. 2023, arXiv 2310.16944; DESIGN.md §1, §6) as rounds: distilled SFT,
AI feedback, distilled DPO, in a closed loop.

One round, top to bottom (`zephyr_round`):

1. The teacher answers the prompt pool once (round 0, reused by every round).
2. Round 1 only (`dsft: true`): dSFT, the student is fine-tuned on the teacher's answers; DPO
   then starts from that model, as in the paper (DPO from a model that never saw the task's
   style learns little).
3. Each pool model answers every prompt once (roles pool_1..pool_k, round 0, reused like the
   teacher's answers); with `student_in_pool: true` the round's start model is one more pool
   member (the last role) that answers anew each round, so later rounds rate the student's own
   answers against the others (on-policy pairs).
4. The judge rates the answers it has not rated yet with the aspect rubric (`zephyr_aspects`:
   helpfulness, honesty, instruction following, truthfulness, 1–5), in generate mode (rationales)
   or probability mode (one call per aspect: what a small judge can do).
5. Binarise (core.feedback): chosen = the best mean, rejected = a seeded random lower answer,
   ties at the top dropped. No pair at all fails the round with the counts of why.
6. A preference snapshot of the pool's pairs, and DPO (core.train.dpo) from the round's start
   model into the round's model.
7. Evaluation of the DPO model against the model it started from, on the held-out prompts.

The recipe section:

    zephyr:
      pool: [smollm2-135m-instruct, tiny-random]   # ≥ 2 models that answer each prompt
      student_in_pool: false
      dsft: true
      beta: 0.1               # DPO's β (paper 0.1; the later recipe 0.01)
      precompute_ref: false   # reference log-probs once before training (no reference model in memory)
      loss_type: sigmoid
      min_margin: 0.0         # rejected at least this much below chosen (mean of aspects)
      seed: 0                 # the rejected draw
      dpo_train: {learning_rate: 5.0e-7}   # TrainConfig overrides for the DPO step (the recipe's
                                           # `train:` is the dSFT step's and the base of these)

Each round's preference snapshot takes that round's AI-feedback pairs only (the spec's `pairs`
filter), not every pair its prompts had in earlier rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from core.recipes import RecipeError
from core.selection import ExploreFilter

TEACHER = "teacher"
KNOWN = {"pool", "student_in_pool", "dsft", "beta", "precompute_ref", "loss_type", "min_margin", "seed", "dpo_train"}
DEFAULTS = {"student_in_pool": False, "dsft": True, "beta": 0.1, "precompute_ref": False, "loss_type": "sigmoid",
            "min_margin": 0.0, "seed": 0, "dpo_train": {}}

__all__ = ["parse_section", "pool_roles", "round_function", "zephyr_round"]


def parse_section(section: Mapping) -> tuple[dict, dict]:
    """The `zephyr:` section validated, defaults filled (JSON-safe), and the models it names."""
    from core.train import objectives
    from core.train.config import TrainConfig

    unknown = sorted(set(map(str, section)) - KNOWN)
    if unknown:
        raise RecipeError(f"zephyr: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    d = DEFAULTS | dict(section)
    pool = d.get("pool")
    if not isinstance(pool, list) or len(pool) < 2:
        raise RecipeError(f"zephyr.pool: a list of at least 2 model names that answer each prompt, not {pool!r}")
    for i, name in enumerate(pool):
        if not isinstance(name, str) or not name.strip():
            raise RecipeError(f"zephyr.pool[{i}]: expected a model name, not {name!r}")
    if len(set(pool)) != len(pool):
        raise RecipeError(f"zephyr.pool: a model is named twice in {pool!r}")
    for key in ("student_in_pool", "dsft", "precompute_ref"):
        if not isinstance(d[key], bool):
            raise RecipeError(f"zephyr.{key}: true or false, not {d[key]!r}")
    beta = d["beta"]
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise RecipeError(f"zephyr.beta: expected a number > 0, not {beta!r}")
    margin = d["min_margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise RecipeError(f"zephyr.min_margin: expected a number ≥ 0, not {margin!r}")
    seed = d["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecipeError(f"zephyr.seed: expected an integer ≥ 0, not {seed!r}")
    try:
        objective = objectives.parse({"kind": "dpo", "beta": beta, "loss_type": d["loss_type"],
                                      "precompute_ref_log_probs": d["precompute_ref"]})
    except ValueError as exc:
        raise RecipeError(f"zephyr.loss_type: {exc}") from exc
    dpo_train = d["dpo_train"]
    if not isinstance(dpo_train, Mapping):
        raise RecipeError(f"zephyr.dpo_train: a mapping of trainer settings, not {dpo_train!r}")
    if "base_model" in dpo_train:
        raise RecipeError("zephyr.dpo_train.base_model: leave it out; DPO starts from the round's model")
    try:
        TrainConfig.from_dict(dict(dpo_train) | {"base_model": "placeholder"})
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"zephyr.dpo_train: {exc}") from exc
    params = {"pool": list(pool), "student_in_pool": d["student_in_pool"], "dsft": d["dsft"],
              "beta": objective["beta"], "precompute_ref": d["precompute_ref"], "loss_type": objective["loss_type"],
              "min_margin": float(margin), "seed": seed, "dpo_train": dict(dpo_train)}
    return params, {f"zephyr.pool[{i}]": name for i, name in enumerate(pool)}


def pool_roles(params: dict) -> list[str]:
    """pool_1 .. pool_k (the student, when it is in the pool, is the last)."""
    return [f"pool_{i + 1}" for i in range(len(params["pool"]) + int(params["student_in_pool"]))]


def zephyr_round(r):
    """dSFT (round 1) → pool answers → aspect ratings → pairs → DPO → evaluation."""
    from core import judge
    from core.feedback import METHOD, binarise
    from core.rounds import RoundFailed, RoundResult, eval_summary, json_safe
    from core.train import job as train_job

    ws, rc, z, n = r.ws, r.recipe, r.recipe.params, r.number
    rubric = judge.get_rubric(rc.rubric)
    if not rubric.aspects:
        raise RoundFailed(f"judge.rubric: Zephyr rates aspects (zephyr_aspects), not {rc.rubric!r}")
    pool = ExploreFilter(datasets=list(rc.pool))

    # 1. The teacher's answers: dSFT's targets (round 0, once for every round).
    r.generate("teacher answers", rc.teacher, TEACHER, pool, round=0)

    # 2. dSFT in round 1: the student learns the teacher's answers; DPO starts from there.
    start = r.student
    if n == 1 and z["dsft"]:
        dsft = r.snapshot("dsft set", r.name("dsft"), {"kind": "sft", "datasets": list(rc.pool), "roles": [TEACHER]})
        start = r.train("dsft", r.name("dsft"), dsft["snapshot"], dict(rc.train), base=r.student)

    # 3. The pool answers. A pool model does not change between rounds: it answers once (round 0,
    #    like the teacher; a greedy answer regenerated would be the same response, same id); the
    #    start model, when it is a member, answers anew in this round.
    roles = pool_roles(z)
    members = list(z["pool"]) + ([start] if z["student_in_pool"] else [])
    answer_rounds = {role: 0 for role in roles[:len(z["pool"])]} | (
        {roles[-1]: n} if z["student_in_pool"] else {})
    for model, role in zip(members, roles, strict=True):
        r.generate(f"{role} answers", model, role, pool, round=answer_rounds[role])

    # 4. AI feedback: each answer not rated yet, on the four aspects.
    mode = None if rc.judge_mode == "auto" else rc.judge_mode
    unjudged = any(ws.store.responses_missing_verdicts(pool, rc.limit, [role], answer_rounds[role], rc.judge,
                                                       rubric.name, mode) for role in roles)
    r.job("rate answers", "judge", {"model": rc.judge, "rubric": rubric.name, "roles": roles, "mode": rc.judge_mode,
                                    "unjudged": True}, pool, needed=unjudged)

    # 5. Binarise: best mean chosen, a random lower one rejected, ties at the top dropped.
    template = rubric.template_hash_for(mode) if mode else None

    def pairs() -> dict:
        summary = binarise(ws, rc.judge, roles, rubric=rubric.name, seed=z["seed"], round=n, selection=pool,
                           min_margin=z["min_margin"], template_hash=template, answer_rounds=answer_rounds)
        if summary.pairs == 0:
            raise RoundFailed(f"round {n} gave no preference pair: {summary.line()}")
        margins = [p["margin"] for p in ws.store.feedback_pairs(rc.judge) if p["round"] == n
                   and p["template_hash"] == summary.template_hash]
        return summary.as_dict() | {"mean_margin": sum(margins) / len(margins) if margins else None}

    feedback = r.compute("binarise", pairs)

    # 6. dDPO from the round's start model on the pool's pairs.
    # This round's pairs only: the prompts' pairs of earlier rounds trained the model we start from.
    snap = r.snapshot("preference set", r.name("pairs"), {"kind": "preference", "datasets": list(rc.pool),
                                                          "pairs": {"methods": [METHOD], "rounds": [n]}})
    objective = {"kind": "dpo", "beta": z["beta"], "loss_type": z["loss_type"],
                 "precompute_ref_log_probs": z["precompute_ref"]}
    model = r.train("dpo", r.model_name, snap["snapshot"], dict(rc.train) | z["dpo_train"], base=start,
                    objective=objective)
    dpo_job = (ws.store.round_step(r.id, "dpo")["outputs"] or {}).get("job")
    history = train_job.metrics(ws.job_dir(dpo_job)) if dpo_job else []

    # 7. The DPO model against the model it started from, on the held-out prompts.
    ev = r.evaluate("evaluate", model, start)

    last = history[-1] if history else {}
    metrics = {"start_model": start, "dsft": n == 1 and z["dsft"], "roles": roles, "members": members,
               "answer_rounds": answer_rounds,
               "pairs": feedback["pairs"], "new_pairs": feedback["new"],
               "ties_dropped": feedback["dropped"].get("tie at the top", 0), "dropped": feedback["dropped"],
               "left_out": feedback["left_out"], "mean_margin": feedback["mean_margin"],
               "snapshot_instructions": snap["instructions"], "snapshot_pairs": train_job.pq_rows(snap["parquet"]),
               "beta": z["beta"],
               "dpo": {"steps": last.get("step"), "first_loss": history[0]["loss"] if history else None,
                       "final_loss": last.get("loss"), "reward_accuracy": last.get("rewards_accuracies"),
                       "reward_margin": last.get("rewards_margins")},
               "evaluation": eval_summary(ev), "lineage": ws.model_lineage(model)}
    return RoundResult(model, snap["snapshot"], json_safe(metrics))


round_function = zephyr_round
