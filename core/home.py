"""The Home page's guidance: where the workspace stands in a round, and the one next step.

A round runs import → (generate) → judge → review → curate → train. `overview(ws)` reads the
counts that place a workspace in that round; `next_step(overview)` is a pure function of those
counts naming the single step that moves it on, with the page (and query parameters) that opens
that step with sensible defaults; `round_goals(overview)` sets each count against what the round
needs. No streamlit here: the page only renders these values, and tests check them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.review_queue import QueueSource

# What a round needs. Named so the page's "12 of 30" and the step logic never disagree.
#
# 30 human labels on the judge: at a precision near 0.8 the Wilson 95% interval is about
# [0.63, 0.90] with 30 labels (±0.14) against [0.49, 0.94] with 10, which is too wide to choose
# a threshold by; 30 labels is also a few minutes in the review queue. With fewer judged targets
# than that, labelling every one of them is the most there is to do.
MIN_JUDGE_LABELS = 30
# One saved snapshot: the immutable set a model of this round is trained on.
MIN_SNAPSHOTS = 1

# The pages a step opens (paths as st.navigation registers them; ui.JOBS_PAGE and ui.REVIEW_PAGE
# name the same files).
IMPORT_PAGE = "app_pages/1_Import.py"
EXPLORE_PAGE = "app_pages/2_Explore.py"
JOBS_PAGE = "app_pages/5_Jobs.py"
REVIEW_PAGE = "app_pages/9_Review.py"
CURATE_PAGE = "app_pages/8_Curate.py"
TRAIN_PAGE = "app_pages/10_Train.py"


@dataclass(frozen=True)
class JudgeSummary:
    """The judge the round is calibrating: one (judge model, rubric) and what it has done."""

    model: str
    rubric: str
    kind: str          # pointwise | pairwise | listwise
    judged: int        # responses it scored
    of_roles: int      # responses of the roles it scored
    roles: str         # those roles, "seed" or "student, teacher"
    labels: int        # its targets with a human decision
    threshold: float   # the rubric's default threshold (core.judge.scale_of)

    @property
    def labels_needed(self) -> int:
        """Labels this judge's calibration needs: MIN_JUDGE_LABELS, or every target it scored if fewer."""
        return min(MIN_JUDGE_LABELS, self.judged) if self.judged > 0 else MIN_JUDGE_LABELS


@dataclass(frozen=True)
class Overview:
    """The counts that place a workspace in a round."""

    datasets: int = 0
    instructions: int = 0
    responses: int = 0
    documents: int = 0
    documents_used: int = 0      # documents some instruction was made from
    reviews: int = 0
    judgments: int = 0
    judge: JudgeSummary | None = None
    only_test_judges: bool = False  # judgments exist, all from the random test model
    snapshots: int = 0
    latest_snapshot: str | None = None
    exports: int = 0             # files in the workspace's exports/ folder
    demo_running: bool = False   # the demo's background judge is queued or running


@dataclass(frozen=True)
class Step:
    """The one next step: what to do, why now, and the page (with query parameters) that does it."""

    key: str              # demo | import | generate | judge | review | curate | train
    title: str
    why: str
    page: str
    query_params: dict[str, str] = field(default_factory=dict)
    button_label: str = ""


@dataclass(frozen=True)
class Goal:
    """One count set against what the round needs: `need` None means there is no target to meet."""

    label: str
    have: int
    need: int | None = None
    note: str = ""

    @property
    def fraction(self) -> float:
        return 1.0 if not self.need else min(self.have / self.need, 1.0)

    def text(self) -> str:
        count = f"{self.have:,} of {self.need:,}" if self.need is not None else f"{self.have:,}"
        return f"{self.label}: {count}" + (f" ({self.note})" if self.note else "")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def next_step(o: Overview) -> Step:
    """The step that moves this workspace on in its round (pure: counts in, a Step out)."""
    if o.demo_running:
        return Step("demo", "Let the demo judge finish",
                    "The built-in SmolLM2 is scoring the demo's answers in the background; the counts below fill "
                    "in as it goes, and this card names the next step when it is done. Browse the samples meanwhile.",
                    EXPLORE_PAGE, {}, "Browse the samples")
    if o.instructions == 0:
        if o.documents:
            why = (f"The workspace holds {_plural(o.documents, 'corpus document')} but no instructions. Turning "
                   "passages into instructions is not built in yet: import instruction/response pairs, prompts, "
                   "chats or preference pairs to judge and curate.")
        else:
            why = ("The workspace is empty. Import a file of instruction/response pairs, prompts, chats, preference "
                   "pairs or plain-text documents; it is checked and previewed before anything is written.")
        return Step("import", "Import your data", why, IMPORT_PAGE, {}, "Import a file")
    if o.responses == 0:
        return Step("generate", "Generate answers with a teacher model",
                    f"{_plural(o.instructions, 'instruction')} and no answers yet: a judge scores answers, so "
                    "generate some first (the form starts on a real model, never the random test model).",
                    JOBS_PAGE, {"stage": "generate"}, "Open the generate form")
    if o.judge is None:
        state = ("only the random test model has judged them, and its verdicts are noise" if o.only_test_judges
                 else "no judge has scored them")
        why = (f"{_plural(o.responses, 'answer')}, and {state}. A judge job scores every answer, so that review "
               "can start with the samples whose verdict is least certain (the form starts on a real model, "
               "never the random test model).")
        return Step("judge", "Score the answers with a judge", why, JOBS_PAGE, {"stage": "judge"},
                    "Open the judge form")
    j = o.judge
    if j.labels < j.labels_needed:
        source = QueueSource("judge", judge_model=j.model, rubric=j.rubric, threshold=j.threshold)
        return Step("review", "Label the judge's most uncertain samples",
                    f"{j.model} has scored {_plural(j.judged, 'answer')} with {j.rubric}, and {j.labels:,} of the "
                    f"{j.labels_needed:,} human labels its calibration needs are in. The queue starts with the "
                    f"samples nearest its threshold ({j.threshold:g}), the labels that narrow the interval most.",
                    REVIEW_PAGE, source.to_query(), "Review the judge's suggestions")
    if o.snapshots < MIN_SNAPSHOTS:
        return Step("curate", "Curate a snapshot",
                    f"{j.labels:,} human labels calibrate {j.model} ({j.rubric}): enough to choose a threshold. "
                    "Combine it with the other filters and save the result as an immutable snapshot.",
                    CURATE_PAGE, {}, "Curate a snapshot")
    saved = f"Snapshot {o.latest_snapshot} is saved." if o.latest_snapshot else "A snapshot is saved."
    return Step("train", "Train on the snapshot",
                f"{saved} Train a model on it (the Train page: pick the snapshot, a base model and the settings); "
                "the trained model is registered with its lineage and can answer, judge or be the next round's "
                "student at once. To run whole rounds (difficulty, seeds, expansion, training, evaluation) from a "
                "recipe, use the Rounds page.",
                TRAIN_PAGE, {}, "Train a model")


def round_goals(o: Overview) -> list[Goal]:
    """The workspace's counts set against what the round needs, in the round's order."""
    goals = [Goal("Instructions", o.instructions, note=_plural(o.datasets, "dataset"))]
    if o.documents:
        unused = o.documents - o.documents_used
        goals.append(Goal("Documents", o.documents,
                          note="corpus, not yet turned into instructions" if o.documents_used == 0
                          else f"corpus; {unused:,} not yet turned into instructions"))
    if o.judge is not None:
        j = o.judge
        label = "Judged responses" if j.kind == "pointwise" else f"Judged {j.kind} targets"
        goals.append(Goal(label, j.judged, j.of_roles or None,
                          note=f"{j.model} · {j.rubric} · role {j.roles}" if j.roles else f"{j.model} · {j.rubric}"))
        goals.append(Goal("Human labels on the judge", j.labels, j.labels_needed,
                          note="" if j.labels_needed == MIN_JUDGE_LABELS
                          else f"every answer it scored; a round asks for {MIN_JUDGE_LABELS}"))
    else:
        goals.append(Goal("Judged responses", 0, o.responses or None, note="no judge yet"))
        goals.append(Goal("Human labels on the judge", 0, MIN_JUDGE_LABELS))
    goals.append(Goal("Snapshots", o.snapshots, MIN_SNAPSHOTS))
    return goals


# --------------------------------------------------------------------------------------------
# Reading the counts from a workspace
# --------------------------------------------------------------------------------------------


def _pick_judge(judges, test_models) -> tuple[dict | None, bool]:
    """The judge the round calibrates: the latest non-test judge, pointwise first (its scores have
    a threshold to calibrate); (None, True) when only test models have judged."""
    rows = judges.to_dict("records") if hasattr(judges, "to_dict") else list(judges)
    real = [r for r in rows if r["judge_model"] not in test_models]
    if not real:
        return None, bool(rows)
    pointwise = [r for r in real if r["kind"] == "pointwise"]
    return (pointwise or real)[0], False  # judges() is newest first


def overview(ws) -> Overview:
    """The counts of a core.workspace.Workspace that next_step and round_goals need."""
    from core import judge as judge_mod
    from core.workspace import TEST_MODELS

    counts = ws.store.table_counts()
    rounds = ws.store.round_counts()
    picked, only_test = _pick_judge(ws.judges(), TEST_MODELS)
    summary = None
    if picked is not None:
        model, rubric = picked["judge_model"], picked["rubric"]
        coverage = ws.store.judge_coverage(model, rubric)
        judged = int(coverage["judged"]) if picked["kind"] == "pointwise" else int(picked["targets"])
        summary = JudgeSummary(model=model, rubric=rubric, kind=picked["kind"], judged=judged,
                               of_roles=int(coverage["of_roles"]), roles=coverage["roles"] or "",
                               labels=ws.store.judge_label_count(model, rubric),
                               threshold=judge_mod.scale_of(rubric).default_threshold)
    demo = ws.demo_status()
    return Overview(
        datasets=int(counts["datasets"]), instructions=int(counts["instructions"]),
        responses=int(counts["responses"]), documents=int(counts["documents"]),
        documents_used=int(rounds["documents_used"]), reviews=int(counts["reviews"]),
        judgments=int(counts["judgments"]), judge=summary, only_test_judges=only_test,
        snapshots=int(rounds["snapshots"]), latest_snapshot=rounds["latest_snapshot"],
        exports=len(ws.export_files()),
        demo_running=bool(demo and demo.get("state") in ("queued", "running")),
    )
