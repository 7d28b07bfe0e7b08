"""Tuna (Li et al. 2023, "Tuna: Instruction Tuning using Feedback from Large Language Models",
arXiv 2310.13385; DESIGN.md §1, §6), one round, from the student it starts with to the next.

    1. The teacher samples N answers per pool prompt (temperature > 0; the generate stage stores
       each sample's mean token log-probability).
    2. Probabilistic ranking: each prompt's answers ordered by that log-prob, best first.
    3. Tuna-p: the round's student is trained on those rankings with the NLL + margin ranking
       loss (core.train.ranking), at lr_p (1e-5 in the paper).
    4. Contextual ranking (`contextual: true`): the Tuna-p model samples N answers of its own, a
       judge ranks each prompt's answers listwise (shown in a shuffled order), and Tuna-c is
       trained from Tuna-p on the valid rankings at lr_c (1e-6). A small judge often fails the
       ranking format: the round counts the valid rankings, trains on those, and when none is
       valid it skips Tuna-c and records why (metrics.contextual.skipped) instead of training on
       nothing.
    5. The round's model (Tuna-c, else Tuna-p) is evaluated against the student it started from.

The recipe's section:

    tuna:
      n: 4                  # answers per prompt, sampled by the teacher (and by Tuna-p for c)
      temperature: 0.7      # sampling temperature (> 0: N equal answers rank nothing)
      top_p: 1.0
      margin: 0.1           # λ: rank l must score λ(l − k) below rank k
      nll_weight: 1.0       # keep the NLL term (without it the ranking loss degenerates)
      lr_p: 1.0e-5          # Tuna-p's learning rate (replaces train.learning_rate)
      lr_c: 1.0e-6          # Tuna-c's
      contextual: true
      judge: null           # the listwise judge for c (default: models.judge)
      judge_max_tokens: 256

The teacher's answers are sampled once (round 0) and reused by every round; the Tuna-p model's
answers of round n have the role `c<n>_<run>` (contextual_role), so the listwise judge never
ranks answers of another round or run together.

Also here: small python-backend models with a known answer for tests and demos
(`length_ranking_judge`, a listwise judge; `length_judge`, a pointwise one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from core.recipes import RecipeError
from core.rounds import Round, RoundFailed, RoundResult, eval_summary, json_safe
from core.selection import ExploreFilter

TEACHER = "teacher"
LISTWISE = "listwise"
DEFAULTS = {"n": 4, "temperature": 0.7, "top_p": 1.0, "margin": 0.1, "nll_weight": 1.0, "lr_p": 1e-5, "lr_c": 1e-6,
            "contextual": True, "judge": None, "judge_max_tokens": 256}

__all__ = ["DEFAULTS", "TunaParams", "contextual_role", "length_judge", "length_ranking_judge", "parse_section",
           "round_function", "sampled_answer", "tuna_round"]


@dataclass(frozen=True)
class TunaParams:
    n: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    margin: float = 0.1
    nll_weight: float = 1.0
    lr_p: float = 1e-5
    lr_c: float = 1e-6
    contextual: bool = True
    judge: str | None = None
    judge_max_tokens: int = 256

    def objective(self) -> dict:
        return {"kind": "ranking", "margin": self.margin, "nll_weight": self.nll_weight}


def _bad(key: str, what: str, value) -> RecipeError:
    return RecipeError(f"tuna.{key}: expected {what}, not {value!r}")


def _number(key: str, value, low: float, high: float | None = None, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (open_low and value == low) or (high is not None and value > high):
        span = f"{'>' if open_low else '≥'} {low}" + (f" and ≤ {high}" if high is not None else "")
        raise _bad(key, f"a number {span}", value)
    return float(value)


def parse_section(section: Mapping) -> tuple[dict, dict]:
    """The recipe's `tuna:` section validated, defaults filled in; errors name key and value."""
    unknown = sorted(set(map(str, section)) - set(DEFAULTS))
    if unknown:
        raise RecipeError(f"tuna: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    d = DEFAULTS | dict(section)
    for key, low in (("n", 2), ("judge_max_tokens", 1)):
        if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < low:
            raise _bad(key, f"an integer ≥ {low}", d[key])
    params = {"n": d["n"], "judge_max_tokens": d["judge_max_tokens"],
              "temperature": _number("temperature", d["temperature"], 0, 5, open_low=True),
              "top_p": _number("top_p", d["top_p"], 0, 1, open_low=True),
              "margin": _number("margin", d["margin"], 0),
              "nll_weight": _number("nll_weight", d["nll_weight"], 0),
              "lr_p": _number("lr_p", d["lr_p"], 0, 1, open_low=True),
              "lr_c": _number("lr_c", d["lr_c"], 0, 1, open_low=True)}
    if not isinstance(d["contextual"], bool):
        raise _bad("contextual", "true or false", d["contextual"])
    params["contextual"] = d["contextual"]
    judge = d["judge"]
    if judge is not None and (not isinstance(judge, str) or not judge.strip()):
        raise _bad("judge", "a model name (or null: models.judge)", judge)
    params["judge"] = judge
    return params, ({"tuna.judge": judge} if judge else {})


def contextual_role(run: str, number: int) -> str:
    """The role of Tuna-p's answers in round `number` of `run` (a valid response role)."""
    slug = re.sub(r"[^a-z0-9]+", "_", run.lower()).strip("_")
    return f"c{int(number)}_{slug}"[:32].rstrip("_")


# --------------------------------------------------------------------------------------------
# The round
# --------------------------------------------------------------------------------------------


def tuna_round(r: Round) -> RoundResult:
    """Tuna-p, then Tuna-c, one round (see the module's docstring)."""
    from core.ranking import freeze_ranking_set, rank_contextual, rank_probabilistic

    ws, rc, n = r.ws, r.recipe, r.number
    t = TunaParams(**rc.params)
    pool = ExploreFilter(datasets=list(rc.pool))
    judge = t.judge or rc.judge

    # 1. The teacher samples N answers per prompt, once (round 0, reused by every round).
    _sample(r, "teacher answers", rc.teacher, TEACHER, pool, 0, t)

    # 2. Probabilistic ranking by the teacher's own mean token log-prob, frozen as a ranking set.
    p_rank = r.compute("probabilistic ranking", lambda: rank_probabilistic(ws, TEACHER, rc.teacher, pool,
                                                                          round=0).as_dict())
    if not p_rank["ranked"]:
        raise RoundFailed(f"no prompt got a probabilistic ranking ({p_rank['skipped']}, {p_rank['without_logprob']} "
                          f"answers without a log-prob): the teacher {rc.teacher!r} must give log-probs (hf, vllm) "
                          f"and sample distinct answers (tuna.temperature > 0, tuna.n ≥ 2)")
    p_set = r.compute("ranking set p", lambda: freeze_ranking_set(
        ws, r.name("p"), "probabilistic", role=TEACHER, model=rc.teacher, round=0, selection=pool))

    # 3. Tuna-p: the student learns the teacher's ranking (NLL of the best + the margin ranking loss).
    p_model = r.train("train p", r.name("p"), p_set["name"], dict(rc.train) | {"learning_rate": t.lr_p},
                      base=r.student, objective=t.objective())
    model, c_set = p_model, None
    contextual: dict = {"valid": 0, "skipped": None}

    # 4. Tuna-c: Tuna-p's own N answers, ranked listwise by the judge; trained on the valid rankings.
    if not t.contextual:
        contextual["skipped"] = "tuna.contextual is false"
    else:
        role = contextual_role(rc.name, n)
        _sample(r, "p-model answers", p_model, role, pool, n, t)
        lists = r.compute("answer lists", lambda: {"lists": len(ws.store.lists_for_judge(pool, [role], 1_000_000))})
        contextual |= {"role": role, "judge": judge, "lists": lists["lists"]}
        if not lists["lists"]:
            contextual["skipped"] = (f"no prompt has two distinct answers of {p_model} (role {role}) to rank: "
                                     "raise tuna.temperature or generate.max_tokens")
        else:
            r.job("judge p-model answers", "judge", {"model": judge, "rubric": LISTWISE, "roles": [role],
                                                     "mode": "generate", "max_tokens": t.judge_max_tokens,
                                                     "seed": n}, pool)
            c_rank = r.compute("contextual ranking", lambda: rank_contextual(
                ws, ws.model(judge).name, role, p_model, round=n, selection=pool).as_dict())
            contextual |= {"valid": c_rank["ranked"], "invalid": c_rank["invalid"], "errors": c_rank["errors"],
                           "mixed": c_rank["skipped"]}
            if not c_rank["ranked"]:
                contextual["skipped"] = (f"no valid contextual ranking: all {c_rank['invalid']} verdicts of {judge} "
                                         f"were invalid ({_errors(c_rank['errors'])})")
            else:
                c_set = r.compute("ranking set c", lambda: freeze_ranking_set(
                    ws, r.name("c"), "contextual", role=role, model=p_model, judge=ws.model(judge).name, round=n,
                    selection=pool))
                model = r.train("train c", r.model_name, c_set["name"], dict(rc.train) | {"learning_rate": t.lr_c},
                                base=p_model, objective=t.objective())

    # 5. Evaluation of the round's model against the model the round started from.
    ev = r.evaluate("evaluate", model, r.student)

    metrics = {"tuna": asdict(t), "probabilistic": p_rank, "groups_p": p_set["n_groups"],
               "ranking_sets": [s["name"] for s in (p_set, c_set) if s],
               "losses_p": _losses(ws, p_model), "contextual": contextual,
               "groups_c": c_set["n_groups"] if c_set else 0,
               "losses_c": _losses(ws, model) if c_set else None, "model_p": p_model,
               "evaluation": eval_summary(ev), "lineage": ws.model_lineage(model)}
    return RoundResult(model, None, json_safe(metrics))


round_function = tuna_round


def _sample(r: Round, name: str, model: str, role: str, selection: ExploreFilter, round: int, t: TunaParams):
    """`model` samples N answers per selected prompt that has none of `role` from it in `round`."""
    rc = r.recipe
    todo = r.ws.store.instructions_missing_answers(selection, rc.limit, role, model, round)
    params = {"model": model, "role": role, "n": t.n, "temperature": t.temperature, "top_p": t.top_p,
              "max_tokens": int(rc.generate["max_tokens"]), "seed": rc.generate.get("seed")}
    return r.job(name, "generate", params, selection, round=round, needed=bool(todo), limit=rc.limit or 1_000_000)


def _errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {why or 'unknown'}" for why, n in sorted(errors.items())) or "none parsed"


def _losses(ws, model: str) -> dict | None:
    """First and final ranking loss, NLL and rank accuracy of the job that trained `model`."""
    from core.train import job as train_job

    lineage = ws.model_lineage(model) or {}
    if not lineage.get("job"):
        return None
    history = train_job.metrics(ws.job_dir(lineage["job"]))
    if not history:
        return None
    first, last = history[0], history[-1]
    return {"steps": last["step"], "first_rank_loss": first.get("rank_loss"), "final_rank_loss": last.get("rank_loss"),
            "first_nll": first.get("nll"), "final_nll": last.get("nll"),
            "first_rank_accuracy": first.get("rank_accuracy"), "final_rank_accuracy": last.get("rank_accuracy"),
            "first_loss": first.get("loss"), "final_loss": last.get("loss")}


# --------------------------------------------------------------------------------------------
# Python-backend models with a known answer (tests, demos)
# --------------------------------------------------------------------------------------------

_SHOWN_ANSWER = re.compile(r"\[Answer (\d+)\]\n(.*?)\n\[End of answer \1\]", re.S)


def length_ranking_judge(conversation: Sequence[dict], prefer: str = "shorter") -> str:
    """A listwise judge (a python-backend generator) that ranks the shown answers by length,
    shorter first (or longer), ties by the shown number: it always writes a valid ranking line,
    so a test knows which order a contextual ranking must come out in."""
    if prefer not in ("shorter", "longer"):
        raise ValueError(f"prefer must be 'shorter' or 'longer', not {prefer!r}")
    text = next(m["content"] for m in reversed(list(conversation)) if m["role"] == "user")
    shown = [(int(j), answer) for j, answer in _SHOWN_ANSWER.findall(text)]
    if len(shown) < 2:
        raise ValueError("the prompt shows fewer than two '[Answer j]' blocks")
    sign = 1 if prefer == "shorter" else -1
    order = sorted(shown, key=lambda a: (sign * len(a[1]), a[0]))
    return f"The {prefer} answers are better here.\nRanking: " + " > ".join(str(j) for j, _ in order)


def length_judge(instruction: str, response: str, scale: tuple[float, float] = (1, 10)) -> float:
    """A pointwise (and, through the backend, pairwise) judge: shorter answers score higher."""
    low, high = scale
    return max(low, high - len(response.split()) * (high - low) / 40)


def sampled_answer(conversation: Sequence[dict], rng) -> str:
    """A python-backend generator whose n samples differ in length (1 to 12 words), so a
    listwise judge has several distinct answers to rank."""
    words = ("yes", "no", "maybe", "the", "answer", "is", "four", "because", "of", "this", "and", "that")
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
