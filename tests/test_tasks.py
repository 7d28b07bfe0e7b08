"""Task labels: taxonomy, label rows and precedence, the embedding and LLM classifiers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import REPO, write_jsonl

from core import tasks
from core.calibration import proportion
from core.llm.base import Backend, ScoreResult
from core.selection import ExploreFilter
from core.workspace import Workspace

SEED = REPO / "data" / "seed.jsonl"
EMBED = "embed:all-MiniLM-L6-v2"

UNLABELED = [
    {"instruction": "What is 17 multiplied by 23?"},
    {"instruction": "Translate 'thank you very much' into German."},
    {"instruction": "Write a Python function that returns the largest number in a list."},
    {"instruction": "Write a short poem about autumn leaves."},
]


def seed_tasks() -> set[str]:
    return {json.loads(line)["task"] for line in SEED.read_text(encoding="utf-8").splitlines() if line.strip()}


def ids_by_text(ws: Workspace) -> dict[str, str]:
    page = ws.explore_page(ExploreFilter(), page_size=500)
    return dict(zip(page["instruction"], page["id"], strict=True))


@pytest.fixture
def mixed(workspace, tmp_path) -> Workspace:
    """Two labelled instructions (imported tasks) and two without a task."""
    workspace.import_paths([write_jsonl(tmp_path / "labelled.jsonl", [
        {"instruction": "What is 12 * 7?", "output": "84", "task": "math"},
        {"instruction": "Translate 'good night' into Spanish.", "output": "Buenas noches.", "task": "translation"},
    ])], "labelled")
    workspace.import_paths([write_jsonl(tmp_path / "open.jsonl", UNLABELED[:2])], "open")
    return workspace


# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------

def test_default_taxonomy_holds_every_seed_task_by_name():
    names = tasks.DEFAULT_TAXONOMY.names
    assert len(seed_tasks()) == 14
    assert seed_tasks() <= set(names)
    assert set(names) - seed_tasks() == {"extraction", "other"}
    assert tasks.validate_taxonomy(tasks.DEFAULT_TAXONOMY) == tasks.DEFAULT_TAXONOMY
    families = {c.name: c.family for c in tasks.DEFAULT_TAXONOMY.classes}
    assert families["code_generation"] == families["code_debugging"] == "code"
    assert families["open_qa"] == families["closed_qa"] == "qa"
    assert families["creative_writing"] == "writing"


def _classes(*names: str) -> list[dict]:
    return [{"name": n, "description": f"{n} tasks", "family": "other"} for n in names]


@pytest.mark.parametrize("classes, message", [
    (_classes("other"), "between 2 and 100 classes, not 1"),
    (_classes("math", "math", "other"), "repeated: math"),
    (_classes("math", "code"), "needs the catch-all class 'other'"),
    (_classes("Math", "other"), "name 'Math' must be snake_case"),
    (_classes("two__words", "other"), "name 'two__words' must be snake_case"),
    (_classes("code", "code_review", "other"), "'code' is a prefix of 'code_review'"),
    ([{"name": "math", "description": "two\nlines", "family": "math"}] + _classes("other"), "one non-empty line"),
    ([{"name": "math", "description": "", "family": "math"}] + _classes("other"), "one non-empty line"),
    ([{"name": "math", "description": "sums", "family": "Maths"}] + _classes("other"), "family 'Maths'"),
    ([{"name": "math", "description": "sums", "colour": "red"}] + _classes("other"), "unknown field(s) colour"),
    ("math, other", "a list of classes"),
])
def test_validate_taxonomy_names_the_bad_value(classes, message):
    with pytest.raises(ValueError) as exc:
        tasks.validate_taxonomy(classes)
    assert message in str(exc.value)


def test_taxonomy_is_edited_per_workspace(workspace, tmp_path):
    assert tasks.get_taxonomy(workspace) == tasks.DEFAULT_TAXONOMY
    custom = tasks.set_taxonomy(workspace, _classes("math", "code", "other"))
    assert custom.names == ["math", "code", "other"]
    assert tasks.get_taxonomy(workspace) == custom
    with pytest.raises(ValueError, match="catch-all"):
        tasks.set_taxonomy(workspace, _classes("math", "code"))
    assert tasks.get_taxonomy(workspace) == custom  # a refused edit changes nothing
    with Workspace(tmp_path / "other_ws") as other:
        assert tasks.get_taxonomy(other) == tasks.DEFAULT_TAXONOMY
    assert tasks.reset_taxonomy(workspace) == tasks.DEFAULT_TAXONOMY
    assert workspace.store.setting(tasks.TASKS_SETTING) is None
    assert tasks.get_taxonomy(workspace) == tasks.DEFAULT_TAXONOMY


def test_a_hand_broken_setting_is_reported(workspace):
    workspace.store.set_setting(tasks.TASKS_SETTING, json.dumps(_classes("math")))
    with pytest.raises(ValueError, match="setting 'task_taxonomy' is not a valid taxonomy"):
        tasks.get_taxonomy(workspace)


# --------------------------------------------------------------------------------------------
# Label rows and which label is current
# --------------------------------------------------------------------------------------------

def _model_labels(ws, values: dict[str, tuple[str, float]], classifier=EMBED, job="job-1") -> int:
    rows = [{"target_id": i, "value": v, "classifier": classifier, "confidence": c, "job_id": job}
            for i, (v, c) in values.items()]
    return ws.store.insert_labels(tasks.labels_table(rows))


def test_import_label_stays_and_wins_over_a_model_label_and_a_human_wins_over_both(mixed):
    ids = ids_by_text(mixed)
    labelled, open_ = ids["What is 12 * 7?"], ids[UNLABELED[0]["instruction"]]
    assert _model_labels(mixed, {labelled: ("open_qa", 0.6), open_: ("math", 0.9)}) == 2
    assert _model_labels(mixed, {labelled: ("open_qa", 0.6), open_: ("math", 0.9)}) == 0  # same ids: no-op

    current = mixed.store.current_tasks([labelled, open_])
    assert current[labelled] == {"task": "math", "source": "import", "confidence": None}
    assert current[open_] == {"task": "math", "source": EMBED, "confidence": 0.9}
    assert mixed.store.instruction(labelled)["task"] == "math"  # the imported label is untouched

    tasks.relabel(mixed, labelled, "reasoning", reviewer="ana")
    tasks.relabel(mixed, open_, "code_generation")
    current = mixed.store.current_tasks([labelled, open_])
    assert current[labelled] == {"task": "reasoning", "source": "human", "confidence": None}
    assert current[open_]["task"] == "code_generation" and current[open_]["source"] == "human"
    assert mixed.store.instruction(labelled)["task"] == "math"

    # A later model run changes nothing where a human has spoken.
    _model_labels(mixed, {open_: ("translation", 0.99)}, job="job-2")
    assert mixed.store.current_tasks([open_])[open_]["task"] == "code_generation"


def test_relabel_back_and_forth_keeps_history_and_the_latest_wins(mixed):
    target = ids_by_text(mixed)[UNLABELED[1]["instruction"]]
    first = tasks.relabel(mixed, target, "translation")
    tasks.relabel(mixed, target, "rewriting")
    last = tasks.relabel(mixed, target, "translation", reviewer="  bo ")
    assert first != last  # the same value again is a new row, not a no-op
    found = tasks.task_of(mixed, target)
    assert (found["task"], found["source"], found["family"], found["imported"]) == \
        ("translation", "human", "transform", None)
    assert [h["value"] for h in found["history"]] == ["translation", "rewriting", "translation"]
    assert found["history"][0]["reviewer"] == "bo" and found["history"][0]["classifier"] == "human"
    assert tasks.task_of(mixed, "no-such-id") is None


def test_relabel_checks_task_and_instruction(mixed):
    target = ids_by_text(mixed)["What is 12 * 7?"]
    with pytest.raises(ValueError, match="task 'algebra' is not in this workspace's taxonomy"):
        tasks.relabel(mixed, target, "algebra")
    with pytest.raises(ValueError, match="no instruction with id 'nope'"):
        tasks.relabel(mixed, "nope", "math")
    tasks.set_taxonomy(mixed, _classes("algebra", "other"))
    tasks.relabel(mixed, target, "algebra")
    assert mixed.store.current_tasks([target])[target]["task"] == "algebra"


def test_task_counts_by_source(mixed):
    ids = ids_by_text(mixed)
    _model_labels(mixed, {ids[UNLABELED[0]["instruction"]]: ("math", 0.8)})
    counts = tasks.task_counts(mixed).set_index("task", drop=False)
    assert counts.loc["math", ["n", "imported", "model", "human"]].tolist() == [2, 1, 1, 0]
    assert counts.loc["math", "family"] == "math"
    assert counts.loc["math", "mean_confidence"] == pytest.approx(0.8)
    assert counts.loc["translation", "n"] == 1
    assert counts["n"].sum() == 4
    unlabelled = counts[counts["task"].isna()]
    assert unlabelled["n"].tolist() == [1] and unlabelled["family"].isna().all()
    only_open = tasks.task_counts(mixed, ExploreFilter(datasets=["open"]))
    assert only_open["n"].sum() == 2


def test_labels_table_rows_and_ids():
    rows = [{"target_id": "t1", "value": "math", "classifier": EMBED, "confidence": 0.5, "job_id": "j",
             "meta": {"top": {"math": 0.5}}}]
    table = tasks.labels_table(rows)
    assert table.column_names == ["id", "target_id", "kind", "value", "classifier", "confidence", "job_id",
                                  "reviewer", "meta"]
    assert table["id"][0].as_py() == tasks.label_id("t1", "task", "math", EMBED, "j")
    assert table["id"][0].as_py() != tasks.label_id("t1", "task", "math", EMBED, "k")
    assert json.loads(table["meta"][0].as_py()) == {"top": {"math": 0.5}}
    assert table["reviewer"][0].as_py() is None


# --------------------------------------------------------------------------------------------
# Pure pieces: split, evaluation, the softmax regression
# --------------------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_stratified():
    ids = [f"id{i:03d}" for i in range(60)]
    strata = ["a"] * 40 + ["b"] * 16 + ["c"] * 3 + ["d"]
    train, test = tasks.split(ids, 0.25, seed=0, strata=strata)
    assert sorted(train + test) == ids
    assert tasks.split(list(reversed(ids)), 0.25, 0, list(reversed(strata))) == (train, test)
    assert tasks.split(ids, 0.25, 1, strata) != (train, test)
    label = dict(zip(ids, strata, strict=True))
    assert [sum(label[i] == s for i in test) for s in "abcd"] == [10, 4, 1, 0]
    assert [label[i] for i in test[:3]] == ["a", "b", "c"]  # round-robin: a prefix is balanced
    plain_train, plain_test = tasks.split(ids, 0.5, 0)
    assert len(plain_test) == 30 and not set(plain_train) & set(plain_test)
    with pytest.raises(ValueError, match="test_share must be between 0 and 1"):
        tasks.split(ids, 1.0)
    with pytest.raises(ValueError, match="distinct ids"):
        tasks.split(["x", "x"], 0.5)


def test_evaluate_counts_an_unanswered_item_as_wrong():
    ev = tasks.evaluate(["math", "math", "code", "code", "qa"], ["math", "code", "code", None, "qa"])
    assert (ev.accuracy.k, ev.accuracy.n) == (3, 5)
    assert ev.accuracy == proportion(3, 5)
    assert ev.n_unanswered == 1
    assert (ev.per_class["math"].k, ev.per_class["math"].n) == (1, 2)
    assert ev.confusions == [("code", "(none)", 1), ("math", "code", 1)]
    assert ev.to_dict()["accuracy"]["value"] == pytest.approx(0.6)
    majority, baseline = tasks.majority_baseline(["b", "a", "a", "b"], ["a", "b", "b"])
    assert majority == "a" and (baseline.k, baseline.n) == (1, 3)  # a tie goes to the first name


def test_softmax_regression_separates_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    x = np.vstack([c + rng.normal(size=(20, 8)) for c in centres])
    y = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    classes = ["a", "b", "c", "never_seen"]
    model = tasks.train_embedding_classifier(x, y, classes)
    probs = model.predict_proba(x)
    assert probs.shape == (60, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert model.predict(x) == y
    assert probs[:, 3].max() < 0.05  # a class with no example gets little mass
    again = tasks.train_embedding_classifier(x, y, classes)
    np.testing.assert_array_equal(again.weights, model.weights)
    with pytest.raises(ValueError, match="'z' are not among the classes"):
        tasks.train_embedding_classifier(x[:2], ["a", "z"], classes)
    with pytest.raises(ValueError, match="no labelled examples"):
        tasks.train_embedding_classifier(np.zeros((0, 8)), [], classes)


# --------------------------------------------------------------------------------------------
# The embedding classifier on the workspace
# --------------------------------------------------------------------------------------------

def test_classify_embed_labels_only_the_unlabelled_and_writes_rows(workspace, tmp_path):
    workspace.import_paths([SEED], "seed")
    workspace.import_paths([write_jsonl(tmp_path / "open.jsonl", UNLABELED)], "open")
    summary = tasks.classify(workspace, "embed")
    assert (summary["n_targets"], summary["n_labelled"], summary["n_failed"]) == (4, 4, 0)
    assert summary["n_train"] == 168 and summary["classifier"] == EMBED

    ids = ids_by_text(workspace)
    current = workspace.store.current_tasks(list(ids.values()))
    predicted = {text: current[ids[text]]["task"] for text in (r["instruction"] for r in UNLABELED)}
    assert predicted == {UNLABELED[0]["instruction"]: "math", UNLABELED[1]["instruction"]: "translation",
                         UNLABELED[2]["instruction"]: "code_generation",
                         UNLABELED[3]["instruction"]: "creative_writing"}
    rows = tasks.task_of(workspace, ids[UNLABELED[0]["instruction"]])["history"]
    assert len(rows) == 1 and rows[0]["classifier"] == EMBED and rows[0]["job_id"] == summary["job_id"]
    assert 0 < rows[0]["confidence"] <= 1
    assert rows[0]["confidence"] == current[ids[UNLABELED[0]["instruction"]]]["confidence"]
    assert sum(current[i]["source"] == "import" for i in ids.values()) == 168  # seed labels stay current

    again = tasks.classify(workspace, "embed", selection=ExploreFilter(datasets=["open"]), job_id="run-2")
    assert (again["n_targets"], again["n_labelled"], again["job_id"]) == (4, 4, "run-2")
    every = tasks.classify(workspace, "embed", include_labelled=True, limit=10)
    assert every["n_targets"] == 10
    labels = workspace.store.label_counts()
    assert labels["n"].sum() == 18
    nothing = tasks.classify(workspace, "embed", selection=ExploreFilter(datasets=["no-such-dataset"]))
    assert (nothing["n_targets"], nothing["n_labelled"], nothing["counts"]) == (0, 0, {})


def test_classify_embed_without_labels_says_what_to_do(workspace, tmp_path):
    workspace.import_paths([write_jsonl(tmp_path / "open.jsonl", UNLABELED)], "open")
    with pytest.raises(ValueError, match="learns from imported or human task labels"):
        tasks.classify(workspace, "embed")
    with pytest.raises(ValueError, match="method must be one of embed, llm, not 'svm'"):
        tasks.classify(workspace, "svm")
    with pytest.raises(ValueError, match="the llm classifier needs a model"):
        tasks.classify(workspace, "llm")


def test_embed_holdout_accuracy_on_the_demo_seed(workspace):
    workspace.import_paths([SEED], "seed")
    result = tasks.holdout_accuracy(workspace, "embed", test_share=0.25, seed=0)
    assert (result["n_train"], result["n_test"]) == (126, 42)
    accuracy, majority = result["accuracy"], result["majority"]
    # Measured: 33/42 = 0.79 (Wilson 0.64-0.88); the majority class gets 3/42 (14 balanced classes).
    assert accuracy.k >= 28, str(accuracy)
    assert accuracy.low > majority.high
    assert (majority.k, majority.n) == (3, 42)
    again = tasks.holdout_accuracy(workspace, "embed", test_share=0.25, seed=0)
    assert again["accuracy"] == accuracy  # deterministic given the seed
    assert workspace.store.label_counts().empty  # measuring writes no label
    report = tasks.accuracy_report(result)
    assert report["accuracy"]["k"] == accuracy.k and report["majority"]["n"] == 42
    assert json.loads(json.dumps(report)) == report  # plain JSON, the same handed over or local


# --------------------------------------------------------------------------------------------
# The LLM zero-shot classifier
# --------------------------------------------------------------------------------------------

class KeywordBackend(Backend):
    """Scores a class name by whether its first word appears in the prompt's instruction: an
    exact, known distribution to check the normalisation against. Optionally fails one text."""

    name = "keyword"
    context_length = None

    def __init__(self, fail_on: str | None = None, context_length: int | None = None):
        self.calls = 0
        self.fail_on = fail_on
        self.context_length = context_length

    def generate(self, conversations, params=None):
        raise NotImplementedError

    def count_tokens(self, conversation):
        return sum(len(m["content"].split()) for m in conversation)

    def score(self, conversations, responses):
        self.calls += 1
        out = []
        for conv, name in zip(conversations, responses, strict=True):
            instruction = conv[-1]["content"].split("[Instruction]")[1].split("[End of instruction]")[0].lower()
            if self.fail_on and self.fail_on in instruction:
                out.append(ScoreResult(None, None, 3, too_long=True, error="too long"))
                continue
            hit = name.split("_")[0] in instruction
            out.append(ScoreResult.from_logprobs([-1.0 if hit else -4.0, -0.5]))
        return out


def test_class_distribution_is_the_normalised_name_probability():
    backend = KeywordBackend()
    names = tasks.DEFAULT_TAXONOMY.names
    scores = tasks.class_logprobs(backend, ["a translation of hola", "a math question"], batch_size=1)
    assert backend.calls == 2
    out = tasks.class_distribution(scores[0], names)
    assert out["task"] == "translation" and out["error"] is None
    expected = math.exp(-1.5) / (math.exp(-1.5) + 15 * math.exp(-4.5))
    assert out["confidence"] == pytest.approx(expected)
    assert sum(out["probs"].values()) == pytest.approx(1.0)
    # A prior that prefers `translation` as much as this text does leaves every class equal.
    flat = tasks.class_distribution(scores[0], names, prior=scores[0])
    assert flat["confidence"] == pytest.approx(1 / 16)
    assert tasks.class_distribution(scores[1], names, prior=scores[0])["task"] == "math"
    means = tasks.class_distribution(scores[0], names, length_normalise=True)
    assert means["confidence"] == pytest.approx(math.exp(-0.75) / (math.exp(-0.75) + 15 * math.exp(-2.25)))


def test_llm_zero_shot_reports_a_failed_text_without_failing_the_batch():
    results = tasks.llm_zero_shot(KeywordBackend(fail_on="huge"), ["math homework", "a huge passage", "translation"],
                                  batch_size=8)
    assert [r["task"] for r in results] == ["math", None, "translation"]
    assert results[1]["error"] == "too long" and results[1]["probs"] == {}


def test_prompts_shrink_to_fit_and_each_variant_gets_its_own_prior():
    names_only = KeywordBackend().count_tokens(tasks.classify_conversation("", descriptions=False))
    backend = KeywordBackend(context_length=names_only + tasks.NAME_TOKEN_MARGIN + 20)
    results = tasks.llm_zero_shot(backend, ["a math question", "a translation of " + "word " * 200])
    assert [r["prompt"] for r in results] == ["names", "cut"]
    assert all(r["error"] is None for r in results)
    priors = tasks.content_free_priors(backend, tasks.DEFAULT_TAXONOMY, ["names", "cut", "full"])
    assert priors["names"] is priors["cut"]
    assert (priors["names"].prompt, priors["full"].prompt) == ("names", "full")


def test_classify_and_holdout_with_an_llm_backend(workspace, tmp_path, monkeypatch):
    workspace.import_paths([SEED], "seed")
    workspace.import_paths([write_jsonl(tmp_path / "open.jsonl", UNLABELED)], "open")
    monkeypatch.setattr(workspace, "load_model", lambda name: KeywordBackend())
    summary = tasks.classify(workspace, "llm", model="keyword", batch_size=3)
    assert (summary["n_targets"], summary["n_labelled"], summary["classifier"]) == (4, 4, "llm:keyword")
    first = ids_by_text(workspace)[UNLABELED[0]["instruction"]]
    row = tasks.task_of(workspace, first)["history"][0]
    assert row["classifier"] == "llm:keyword" and 0 < row["confidence"] <= 1
    assert json.loads(row["meta"])["template_hash"] == tasks.TEMPLATE_HASH
    result = tasks.holdout_accuracy(workspace, "llm", model="keyword", limit=14)
    assert result["n_test"] == 14
    assert sorted(r for r in result["evaluation"].per_class) == sorted(seed_tasks())  # one item per class


@pytest.fixture(scope="module")
def tiny():
    from core.llm.registry import load_backend

    with load_backend("tiny-random") as backend:
        yield backend


def test_llm_zero_shot_on_tiny_random_gives_a_distribution_for_every_text(tiny):
    texts = ["What is 2 + 2?", "Translate 'cat' into French.", "Write a haiku.",
             "Summarize this.\n\nInput:\n" + "The committee met and talked at length. " * 200]
    results = tasks.llm_zero_shot(tiny, texts)
    names = tasks.DEFAULT_TAXONOMY.names
    assert len(results) == 4
    for r in results:
        assert r["error"] is None and r["task"] in names
        assert list(r["probs"]) == names
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-9)
        assert r["confidence"] == max(r["probs"].values())
    # tiny-random's 512-token context holds no class descriptions: names only, and the long text cut.
    assert [r["prompt"] for r in results] == ["names", "names", "names", "cut"]
    assert all(tiny.count_tokens(tasks.classify_conversation(t)) > 512 - tasks.NAME_TOKEN_MARGIN for t in texts)


def test_a_prompt_that_fits_keeps_the_descriptions():
    conv = tasks.classify_conversation("Solve 3x = 9.")
    text = conv[0]["content"]
    assert conv[0]["role"] == "user" and "Solve 3x = 9." in text
    for c in tasks.DEFAULT_TAXONOMY.classes:
        assert f"- {c.name}: {c.description}" in text
    assert tasks.llm_zero_shot(KeywordBackend(), ["Solve it with math"])[0]["prompt"] == "full"


def test_task_text_cuts_a_long_input():
    assert tasks.task_text("Summarize.", "") == "Summarize."
    cut = tasks.task_text("Summarize.", "word " * 500, max_input_chars=100)
    assert cut.startswith("Summarize.\n\nInput:\nword") and cut.endswith(" …") and len(cut) < 130


def test_store_settings_roundtrip(workspace):
    assert workspace.store.setting("x") is None
    workspace.store.set_setting("x", json.dumps({"a": 1}))
    workspace.store.set_setting("x", json.dumps({"a": 2}))
    assert json.loads(workspace.store.setting("x")) == {"a": 2}
    workspace.store.delete_setting("x")
    assert workspace.store.setting("x") is None
