"""Task labels: a per-workspace taxonomy, two classifiers and human relabels (DESIGN.md §3, §6).

TAPIR rebalances training data by task (boosting math, reasoning and code), so every instruction
needs a task. Imported labels (`instructions.task`) are kept as they came; model and human labels
are rows of the `labels` table, and the view `current_tasks` picks one per instruction:
human > import > model.

Two classifiers, both giving a probability over the taxonomy's classes:

- **embed**: all-MiniLM-L6-v2 vectors of the instructions (cached in the catalog) and a
  multinomial logistic regression with L2, fit in numpy on the imported and human labels. Cheap
  at scale (one vector per text, one small matrix product), and it learns the workspace's own
  notion of each class.
- **llm**: zero-shot, like a probability judge (DESIGN.md §6): a prompt lists the classes with
  their descriptions and asks for one name; the distribution is read from the model's own
  log-probabilities of each class name, `backend.score`, normalised over the classes and
  calibrated against a content-free input. It needs no labels, but it costs one scoring of the
  whole prompt per class.

Confidence is the top class's probability. The pure functions (taxonomy validation, training,
prediction, splitting, evaluation, prompt building) take no workspace; `classify`, `relabel` and
`holdout_accuracy` take a `core.workspace.Workspace` (its `.store`, `.embed` and `.load_model`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from string import Template

import numpy as np
import pyarrow as pa

from core.calibration import Proportion, proportion
from core.embed import DIM as EMBED_DIM
from core.embed import MODEL_NAME as EMBED_MODEL
from core.ids import content_id
from core.judge import format_instruction
from core.selection import ExploreFilter

__all__ = [
    "CONTENT_FREE", "DEFAULT_TAXONOMY", "TASKS_SETTING", "ClassScores", "Evaluation", "SoftmaxModel", "TaskClass",
    "Taxonomy", "accuracy_report", "class_distribution", "class_logprobs", "classify", "classify_conversation",
    "content_free_priors", "embed_features", "evaluate", "get_taxonomy", "holdout_accuracy", "label_id", "labels_table", "llm_zero_shot",
    "majority_baseline", "relabel", "reset_taxonomy", "set_taxonomy", "split", "task_counts", "task_of",
    "task_text", "train_embedding_classifier", "validate_taxonomy",
]

TASKS_SETTING = "task_taxonomy"
KIND = "task"
HUMAN = "human"
METHODS = ("embed", "llm")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
MAX_NAME_CHARS = 40
MAX_DESCRIPTION_CHARS = 300
MAX_CLASSES = 100

# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskClass:
    name: str  # snake_case; the value stored in labels and the string the LLM is scored on
    description: str  # one line: the LLM classifier's prompt lists it beside the name
    family: str  # a coarser group (math, reasoning, code, writing, qa, transform, analysis, other)


@dataclass(frozen=True)
class Taxonomy:
    classes: tuple[TaskClass, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def family(self, name: str) -> str | None:
        return next((c.family for c in self.classes if c.name == name), None)

    def to_json(self) -> str:
        return json.dumps([asdict(c) for c in self.classes])

    def __len__(self) -> int:
        return len(self.classes)


# The 14 task types of data/seed.jsonl and data/eval_prompts.jsonl, by the same names (so the
# demo's imported labels are valid classes), plus extraction and the catch-all `other`.
DEFAULT_TAXONOMY = Taxonomy((
    TaskClass("math", "Calculate, solve an equation or word problem, or prove a mathematical result.", "math"),
    TaskClass("reasoning", "Solve a logic puzzle, riddle or deduction that needs step-by-step thinking.", "reasoning"),
    TaskClass("code_generation", "Write new code: a function, script, class, query or regular expression.", "code"),
    TaskClass("code_debugging", "Find and fix a bug in given code, or explain why it fails.", "code"),
    TaskClass("creative_writing", "Write a story, poem, song, joke or other imaginative text.", "writing"),
    TaskClass("professional_writing", "Write an email, letter, cover letter, agenda, report or other work text.",
              "writing"),
    TaskClass("roleplay", "Answer in character: act as a persona or play out a scene.", "writing"),
    TaskClass("brainstorming", "Come up with a list of ideas, names, suggestions or options.", "writing"),
    TaskClass("open_qa", "Answer a factual or how/why question from general knowledge.", "qa"),
    TaskClass("closed_qa", "Answer a question using only a given passage or text.", "qa"),
    TaskClass("summarization", "Condense a given text into a short summary or key points.", "transform"),
    TaskClass("classification", "Sort given items or a text into categories, labels or a sentiment.", "analysis"),
    TaskClass("rewriting", "Rewrite, paraphrase, shorten or change the tone of a given text.", "transform"),
    TaskClass("translation", "Translate a text from one language into another.", "transform"),
    TaskClass("extraction", "Pull specific facts, names, numbers or fields out of a given text.", "analysis"),
    TaskClass("other", "Anything that fits none of the classes above.", "other"),
))


def validate_taxonomy(classes: Taxonomy | Iterable[TaskClass | Mapping]) -> Taxonomy:
    """A Taxonomy from classes (TaskClass or {name, description, family} dicts), checked:
    2–100 classes, unique snake_case names, `other` among them, one-line descriptions, and no
    name a prefix of another (the LLM classifier scores each name as a string with no end
    marker, so P("code") would include P("code_review"))."""
    if isinstance(classes, Taxonomy):
        classes = classes.classes
    if isinstance(classes, (str, bytes, Mapping)) or not isinstance(classes, Iterable):
        raise ValueError(f"a taxonomy is a list of classes, not {classes!r:.200}")
    out = [_task_class(c, i) for i, c in enumerate(classes)]
    if not 2 <= len(out) <= MAX_CLASSES:
        raise ValueError(f"a taxonomy needs between 2 and {MAX_CLASSES} classes, not {len(out)}")
    names = [c.name for c in out]
    duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
    if duplicates:
        raise ValueError(f"task class names must be unique; repeated: {', '.join(duplicates)}")
    if "other" not in names:
        raise ValueError(f"a taxonomy needs the catch-all class 'other'; it has {', '.join(names)}")
    for a in names:
        for b in names:
            if a != b and b.startswith(a):
                raise ValueError(f"task class {a!r} is a prefix of {b!r}; rename one (the LLM classifier "
                                 "could not tell them apart)")
    return Taxonomy(tuple(out))


def _task_class(item, index: int) -> TaskClass:
    if isinstance(item, TaskClass):
        item = asdict(item)
    if not isinstance(item, Mapping):
        raise ValueError(f"task class {index} must be {{name, description, family}}, not {item!r:.200}")
    unknown = set(item) - {"name", "description", "family"}
    if unknown:
        raise ValueError(f"task class {index}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    name, description, family = item.get("name"), item.get("description"), item.get("family", "other")
    for what, value in (("name", name), ("family", family)):
        if not isinstance(value, str) or len(value) > MAX_NAME_CHARS or not NAME_RE.match(value):
            raise ValueError(f"task class {index}: {what} {value!r} must be snake_case (lowercase letters, digits "
                             f"and single '_', starting with a letter, at most {MAX_NAME_CHARS} characters)")
    if not isinstance(description, str) or not description.strip() or "\n" in description \
            or len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"task class {name!r}: description must be one non-empty line of at most "
                         f"{MAX_DESCRIPTION_CHARS} characters, not {description!r:.200}")
    return TaskClass(name, description.strip(), family)


def get_taxonomy(ws) -> Taxonomy:
    """The workspace's taxonomy (settings key `task_taxonomy`), or the default when unset."""
    stored = ws.store.setting(TASKS_SETTING)
    if stored is None:
        return DEFAULT_TAXONOMY
    try:
        return validate_taxonomy(json.loads(stored))
    except ValueError as exc:  # edited by hand into something invalid: say where it came from
        raise ValueError(f"the workspace setting {TASKS_SETTING!r} is not a valid taxonomy: {exc}") from None


def set_taxonomy(ws, classes) -> Taxonomy:
    """Validate and store a taxonomy for this workspace. Labels already stored are kept, even
    those whose class it drops (task_counts shows them with family None)."""
    taxonomy = validate_taxonomy(classes)
    ws.store.set_setting(TASKS_SETTING, taxonomy.to_json())
    return taxonomy


def reset_taxonomy(ws) -> Taxonomy:
    ws.store.delete_setting(TASKS_SETTING)
    return DEFAULT_TAXONOMY


def _check_task(taxonomy: Taxonomy, task: str) -> str:
    if task not in taxonomy.names:
        raise ValueError(f"task {task!r} is not in this workspace's taxonomy; classes: {', '.join(taxonomy.names)}")
    return task


# --------------------------------------------------------------------------------------------
# Label rows
# --------------------------------------------------------------------------------------------

LABEL_SCHEMA = pa.schema([
    ("id", pa.string()), ("target_id", pa.string()), ("kind", pa.string()), ("value", pa.string()),
    ("classifier", pa.string()), ("confidence", pa.float64()), ("job_id", pa.string()),
    ("reviewer", pa.string()), ("meta", pa.string()),
])


def label_id(target_id: str, kind: str, value: str, classifier: str, job_id: str | None, *salt: str) -> str:
    """hash(target, kind, value, classifier, job): the same run's label again adds nothing.
    `salt` (a human label's time) makes a repeated value a new row."""
    return content_id("label", target_id, kind, value, classifier, job_id or "", *salt)


def labels_table(rows: Iterable[Mapping]) -> pa.Table:
    """Label rows (target_id, value, classifier, confidence, job_id, reviewer, meta; kind
    defaults to task) as an Arrow batch for Store.insert_labels, with content-hash ids unless a
    row brings its own."""
    cols: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}
    for row in rows:
        kind = row.get("kind", KIND)
        cols["id"].append(row.get("id") or label_id(row["target_id"], kind, row["value"], row["classifier"],
                                                    row.get("job_id")))
        cols["target_id"].append(row["target_id"])
        cols["kind"].append(kind)
        cols["value"].append(row["value"])
        cols["classifier"].append(row["classifier"])
        cols["confidence"].append(None if row.get("confidence") is None else float(row["confidence"]))
        cols["job_id"].append(row.get("job_id"))
        cols["reviewer"].append(row.get("reviewer"))
        meta = row.get("meta")
        cols["meta"].append(None if meta is None else json.dumps(meta, sort_keys=True))
    return pa.table(cols, schema=LABEL_SCHEMA)


def task_text(instruction: str, input: str | None = "", max_input_chars: int | None = None) -> str:
    """What a classifier sees: the instruction, then its input (cut to max_input_chars: the kind
    of task shows in the first lines, and every character costs the LLM once per class)."""
    if input and max_input_chars is not None and len(input) > max_input_chars:
        input = input[:max_input_chars].rstrip() + " …"
    return format_instruction(instruction, input)


# --------------------------------------------------------------------------------------------
# Embedding classifier: multinomial logistic regression with L2, in numpy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftmaxModel:
    """p(class | x) = softmax(((x - mean) / scale) @ weights + bias)."""

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (dim, k)
    bias: np.ndarray  # (k,)
    n_train: int = 0
    meta: dict = field(default_factory=dict)

    def predict_proba(self, vectors) -> np.ndarray:
        x = (np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale
        return _softmax(x @ self.weights + self.bias)

    def predict(self, vectors) -> list[str]:
        return [self.classes[j] for j in self.predict_proba(vectors).argmax(axis=1)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train_embedding_classifier(vectors, labels: Sequence[str], classes: Sequence[str], l2: float = 1e-2,
                               iterations: int = 500) -> SoftmaxModel:
    """Fit a softmax regression on (vectors, labels) over `classes` (a class with no example gets
    a low probability, not an error).

    The loss (mean cross-entropy + l2/2 · |W|², bias unpenalised) is convex and the fit starts at
    zero, so the model is fully deterministic: no seed is needed. Features are standardised,
    which makes the problem well conditioned, and Nesterov's accelerated gradient with step 1/L
    (L bounds the gradient's Lipschitz constant) converges in a few hundred steps.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"need one vector per label, got vectors of shape {x.shape} and {len(labels)} labels")
    if len(x) == 0:
        raise ValueError("no labelled examples to learn from")
    if not l2 > 0:
        raise ValueError(f"l2 must be positive, not {l2!r}")
    classes = tuple(classes)
    index = {c: j for j, c in enumerate(classes)}
    unknown = sorted({str(y) for y in labels} - index.keys())
    if unknown:
        raise ValueError(f"label(s) {', '.join(map(repr, unknown))} are not among the classes {list(classes)}")
    y = np.zeros((len(x), len(classes)))
    y[np.arange(len(x)), [index[v] for v in labels]] = 1.0
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # last column: the bias
    n = len(xs)
    # Softmax cross-entropy has Hessian ≤ ½·I in the logits, so L ≤ ½·σ_max(X)²/n + l2.
    lipschitz = 0.5 * np.linalg.norm(xs, 2) ** 2 / n + l2
    penalty = np.ones((xs.shape[1], 1))
    penalty[-1] = 0.0  # the bias is not shrunk
    w = np.zeros((xs.shape[1], len(classes)))
    previous, t = w, 1.0
    for _ in range(iterations):
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        look = w + ((t - 1) / t_next) * (w - previous)
        grad = xs.T @ (_softmax(xs @ look) - y) / n + l2 * penalty * look
        previous, w, t = w, look - grad / lipschitz, t_next
    return SoftmaxModel(classes, mean, scale, w[:-1], w[-1], n_train=n,
                        meta={"l2": l2, "iterations": iterations, "embedder": EMBED_MODEL})


# --------------------------------------------------------------------------------------------
# LLM zero-shot classifier: the class distribution from the model's own log-probabilities
# --------------------------------------------------------------------------------------------

# Kept here until core/prompts gains it as `task_classify.txt` (its hash goes into each label's meta).
CLASSIFY_TEMPLATE = """Classify the instruction below by the kind of task it asks for. The task classes are:

$classes

[Instruction]
$instruction
[End of instruction]

Reply with the name of the one class that fits best, exactly as written above, and nothing else."""
TEMPLATE_HASH = hashlib.sha256(CLASSIFY_TEMPLATE.encode()).hexdigest()[:12]
# Tokens kept free for the class name after the prompt (names are short: 1–6 tokens).
NAME_TOKEN_MARGIN = 16


def _class_lines(taxonomy: Taxonomy, descriptions: bool) -> str:
    if descriptions:
        return "\n".join(f"- {c.name}: {c.description}" for c in taxonomy.classes)
    return "\n".join(f"- {c.name}" for c in taxonomy.classes)


def classify_conversation(text: str, taxonomy: Taxonomy = DEFAULT_TAXONOMY, descriptions: bool = True) -> list[dict]:
    """The one-message conversation that asks for the class of `text`."""
    user = Template(CLASSIFY_TEMPLATE).substitute(classes=_class_lines(taxonomy, descriptions), instruction=text)
    return [{"role": "user", "content": user}]


def _fitted_conversation(backend, text: str, taxonomy: Taxonomy) -> tuple[list[dict], str]:
    """The prompt for `text` that fits the backend's context: with descriptions, else with names
    only, else with the text cut. Returns (conversation, how: full | names | cut); one that still
    does not fit is returned as is, and the backend marks its scores too_long."""
    limit = getattr(backend, "context_length", None)
    conv = classify_conversation(text, taxonomy)
    budget = (limit or 0) - NAME_TOKEN_MARGIN
    if limit is None or backend.count_tokens(conv) <= budget:
        return conv, "full"
    conv = classify_conversation(text, taxonomy, descriptions=False)
    if backend.count_tokens(conv) <= budget:
        return conv, "names"
    frame = backend.count_tokens(classify_conversation("", taxonomy, descriptions=False))
    for _ in range(4):  # shrink the text in proportion to the tokens it may use, with a margin
        used = backend.count_tokens(conv)
        if used <= budget or budget <= frame:
            break
        keep = int(len(text) * (budget - frame) / max(used - frame, 1) * 0.9)
        text = text[:max(keep, 1)].rstrip() + " …"
        conv = classify_conversation(text, taxonomy, descriptions=False)
    return conv, "cut"


@dataclass(frozen=True)
class ClassScores:
    """log P(class name | prompt) for each class of one text (sum and mean over the name's
    tokens), or the error that kept the text from being scored."""

    sum_logprobs: np.ndarray | None
    mean_logprobs: np.ndarray | None
    prompt: str  # full | names | cut (see _fitted_conversation)
    error: str | None = None


def class_logprobs(backend, texts: Sequence[str], taxonomy: Taxonomy = DEFAULT_TAXONOMY, batch_size: int = 4,
                   progress: Callable[[int, int], None] | None = None) -> list[ClassScores]:
    """Score every class name as the answer to each text's prompt (`backend.score`: one scoring
    per class, so cost grows with the number of classes). `batch_size` texts (× the number of
    classes) go to the backend per call; a text that cannot be scored (too long, a backend
    error) gets its error and never fails the batch."""
    out: list[ClassScores] = []
    for start in range(0, len(texts), max(1, batch_size)):
        prompts = [_fitted_conversation(backend, t, taxonomy) for t in texts[start:start + batch_size]]
        out += _score_prompts(backend, prompts, taxonomy.names)
        if progress:
            progress(len(out), len(texts))
    return out


def _score_prompts(backend, prompts: list[tuple[list[dict], str]], names: list[str]) -> list[ClassScores]:
    scores = backend.score([conv for conv, _ in prompts for _ in names], [n for _ in prompts for n in names])
    return [_class_scores(scores[k * len(names):(k + 1) * len(names)], how) for k, (_, how) in enumerate(prompts)]


def _class_scores(scores, how: str) -> ClassScores:
    failed = next((s for s in scores if s.too_long or s.error or s.sum_logprob is None), None)
    if failed is not None:
        error = failed.error or ("too long for the model's context" if failed.too_long else "no log-probability")
        return ClassScores(None, None, how, error)
    return ClassScores(np.array([s.sum_logprob for s in scores]), np.array([s.mean_logprob for s in scores]), how)


def class_distribution(scores: ClassScores, names: Sequence[str], prior: ClassScores | None = None,
                       length_normalise: bool = False) -> dict:
    """{task, confidence, probs {class: p}, prompt, error} from one text's class scores.

    probs ∝ P(name | prompt), normalised over the classes. The default uses each name's total
    log-probability, the probability of the whole name; the per-token mean (length_normalise)
    favours multi-token names whose later tokens are near-certain once the first is chosen
    ("_writing" after "creative"). With a `prior` (the scores of a content-free text), the
    distribution is divided by it: contextual calibration (Zhao et al. 2021, "Calibrate Before
    Use"), which removes a small model's preference for some names whatever the instruction."""
    if scores.error is not None:
        return {"task": None, "confidence": None, "probs": {}, "prompt": scores.prompt, "error": scores.error}
    logp = scores.mean_logprobs if length_normalise else scores.sum_logprobs
    logp = _log_normalise(np.asarray(logp, dtype=np.float64))
    if prior is not None and prior.error is None:
        logp = _log_normalise(logp - _log_normalise(prior.mean_logprobs if length_normalise else prior.sum_logprobs))
    p = np.exp(logp)
    top = int(p.argmax())
    return {"task": names[top], "confidence": float(p[top]), "probs": dict(zip(names, p.tolist(), strict=True)),
            "prompt": scores.prompt, "error": None}


def _log_normalise(logp: np.ndarray) -> np.ndarray:
    m = logp.max()
    return logp - (m + np.log(np.exp(logp - m).sum()))


# The content-free text for contextual calibration (the paper's "N/A").
CONTENT_FREE = "N/A"


def content_free_priors(backend, taxonomy: Taxonomy, variants: Iterable[str]) -> dict[str, ClassScores]:
    """The content-free text's class scores under each prompt variant in use: a prior is only
    comparable to texts asked with the same prompt ('full' lists descriptions; 'names' and 'cut'
    do not). One scoring per class and variant."""
    variants = set(variants)
    priors: dict[str, ClassScores] = {}
    for descriptions in sorted({v == "full" for v in variants}):
        conv = classify_conversation(CONTENT_FREE, taxonomy, descriptions)
        prior = _score_prompts(backend, [(conv, "full" if descriptions else "names")], taxonomy.names)[0]
        priors |= {v: prior for v in variants if (v == "full") == descriptions}
    return priors


def llm_zero_shot(backend, texts: Sequence[str], taxonomy: Taxonomy = DEFAULT_TAXONOMY, batch_size: int = 4,
                  calibrate: bool = True, length_normalise: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One result per text: {task, confidence, probs {class: p} summing to 1, prompt, error};
    task None (with the error) for a text that could not be scored. See class_distribution;
    calibration adds one content-free scoring per prompt variant."""
    scores = class_logprobs(backend, texts, taxonomy, batch_size, progress)
    priors = content_free_priors(backend, taxonomy, {s.prompt for s in scores if s.error is None}) if calibrate else {}
    return [class_distribution(s, taxonomy.names, priors.get(s.prompt), length_normalise) for s in scores]


# --------------------------------------------------------------------------------------------
# Splits and evaluation
# --------------------------------------------------------------------------------------------


def split(ids: Sequence[str], test_share: float = 0.25, seed: int = 0,
          strata: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(train, test) ids, deterministic given the seed and independent of the input order.

    With strata (a label per id), each stratum gives round(share · size) of its ids to test, so
    a small class is not left out of one side by chance (a stratum of one stays in train), and
    the test ids come round-robin over the strata: any prefix of them is as balanced as it can
    be, which makes `test[:k]` a fair fixed subset when scoring all of them costs too much."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be between 0 and 1 (exclusive), not {test_share!r}")
    if strata is not None and len(strata) != len(ids):
        raise ValueError(f"need one stratum per id, got {len(strata)} for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("split needs distinct ids")
    groups: dict[str, list[str]] = {}
    for i, s in sorted(zip(ids, strata if strata is not None else [""] * len(ids), strict=True)):
        groups.setdefault(s, []).append(i)
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test_groups: list[list[str]] = []
    for s in sorted(groups):
        members = [groups[s][j] for j in rng.permutation(len(groups[s]))]
        k = min(int(round(test_share * len(members))), len(members) - 1)
        test_groups.append(members[:k])
        train += members[k:]
    test = [g[r] for r in range(max(map(len, test_groups), default=0)) for g in test_groups if r < len(g)]
    return train, test


@dataclass(frozen=True)
class Evaluation:
    accuracy: Proportion  # correct / all (an unanswered item counts as wrong)
    per_class: dict[str, Proportion]  # recall per true class
    n_unanswered: int
    confusions: list[tuple[str, str, int]]  # (true, predicted, n), most frequent first, errors only

    def to_dict(self) -> dict:
        return {"accuracy": _proportion_dict(self.accuracy),
                "per_class": {c: _proportion_dict(p) for c, p in self.per_class.items()},
                "n_unanswered": self.n_unanswered, "confusions": [list(c) for c in self.confusions]}


def _proportion_dict(p: Proportion) -> dict:
    return {"value": p.value, "k": p.k, "n": p.n, "low": p.low, "high": p.high}


def evaluate(y_true: Sequence[str], y_pred: Sequence[str | None]) -> Evaluation:
    """Accuracy with a Wilson 95% interval, recall per class, and the most common confusions."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"need one prediction per label, got {len(y_pred)} for {len(y_true)}")
    correct = [t == p for t, p in zip(y_true, y_pred, strict=True)]
    per_class = {}
    for c in sorted(set(y_true)):
        hits = [ok for t, ok in zip(y_true, correct, strict=True) if t == c]
        per_class[c] = proportion(sum(hits), len(hits))
    wrong = Counter((t, p if p is not None else "(none)") for t, p in zip(y_true, y_pred, strict=True) if t != p)
    return Evaluation(proportion(sum(correct), len(correct)), per_class,
                      sum(p is None for p in y_pred), sorted(((t, p, n) for (t, p), n in wrong.items()),
                                                             key=lambda c: (-c[2], c[0], c[1])))


def majority_baseline(train_labels: Sequence[str], test_labels: Sequence[str]) -> tuple[str | None, Proportion]:
    """The accuracy of always answering the training set's most common class (ties: by name)."""
    if not train_labels:
        return None, proportion(0, len(test_labels))
    counts = Counter(train_labels)
    top = min(counts, key=lambda c: (-counts[c], c))
    return top, proportion(sum(t == top for t in test_labels), len(test_labels))


# --------------------------------------------------------------------------------------------
# Workspace level
# --------------------------------------------------------------------------------------------


def _classifier_name(method: str, model: str | None) -> str:
    if method == "embed":
        return f"embed:{EMBED_MODEL}"
    if method == "llm":
        if not model:
            raise ValueError("the llm classifier needs a model (e.g. smollm2-135m-instruct); see `winnow models list`")
        return f"llm:{model}"
    raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")


def _examples(ws, taxonomy: Taxonomy, selection: ExploreFilter | None = None) -> tuple[list[dict], int]:
    """Labelled instructions whose task is a class of the taxonomy, and how many were not."""
    rows = ws.store.task_examples(selection)
    known = [r for r in rows if r["task"] in taxonomy.names]
    return known, len(rows) - len(known)


def _texts(rows: Iterable[Mapping], max_input_chars: int | None = None) -> list[str]:
    return [task_text(r["text"], r["input"], max_input_chars) for r in rows]


def embed_features(ws, rows: Sequence[Mapping]) -> np.ndarray:
    """The embedding classifier's features: the instruction's vector and a has-input flag.

    The input is left out of the vector on purpose: a passage to summarise or translate says
    what the text is about, not what to do with it, and embedding it with the instruction cut
    cross-validated accuracy on the demo seed's training split from 0.86 to 0.69-0.73. Whether
    there is an input at all is informative (closed vs open QA), so it is one more feature."""
    vectors = ws.embed([r["text"] for r in rows]) if rows else np.zeros((0, EMBED_DIM), dtype=np.float32)
    has_input = np.array([[1.0 if (r.get("input") or "").strip() else 0.0] for r in rows]).reshape(len(rows), 1)
    return np.hstack([vectors, has_input])


def _predict_embed(ws, taxonomy: Taxonomy, train: list[dict], targets: list[dict]) -> tuple[list[dict], dict]:
    if not train:
        raise ValueError("the embedding classifier learns from imported or human task labels, and this workspace "
                         f"has none in its taxonomy ({', '.join(taxonomy.names)}); import labelled data, relabel "
                         "some instructions, or use the llm method")
    model = train_embedding_classifier(embed_features(ws, train), [r["task"] for r in train], taxonomy.names)
    probs = model.predict_proba(embed_features(ws, targets))
    results = []
    for row in probs:
        top = int(row.argmax())
        results.append({"task": taxonomy.names[top], "confidence": float(row[top]),
                        "probs": dict(zip(taxonomy.names, row.tolist(), strict=True)), "error": None})
    return results, {"n_train": model.n_train, "l2": model.meta["l2"]}


LLM_MAX_INPUT_CHARS = 600


def _predict_llm(ws, taxonomy: Taxonomy, model: str, targets: list[dict], batch_size: int,
                 progress) -> tuple[list[dict], dict]:
    with ws.load_model(model) as backend:
        results = llm_zero_shot(backend, _texts(targets, LLM_MAX_INPUT_CHARS), taxonomy, batch_size=batch_size,
                                progress=progress)
    return results, {"template_hash": TEMPLATE_HASH}


def _run_id(method: str, classifier: str) -> str:
    """A run id when the caller gives no job: labels of different runs are different rows, so the
    latest run is the current model label even when it repeats an earlier run's value."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return f"tasks-{method}-{stamp[:15]}-{content_id(classifier, stamp)[:6]}"


def classify(ws, method: str = "embed", selection: ExploreFilter | None = None, model: str | None = None,
             job_id: str | None = None, include_labelled: bool = False, limit: int = 10_000_000,
             batch_size: int = 4, progress: Callable[[int, int], None] | None = None) -> dict:
    """Label the selection's instructions that have no imported or human task (all of them with
    include_labelled: the imported and human labels still win in current_tasks) and store one
    label row each. Returns a summary: counts per task, failures, the classifier and job."""
    classifier = _classifier_name(method, model)
    taxonomy = get_taxonomy(ws)
    targets = ws.store.task_targets(selection, include_labelled, limit)
    job_id = job_id or _run_id(method, classifier)
    summary = {"method": method, "classifier": classifier, "job_id": job_id, "n_targets": len(targets)}
    results: list[dict] = []
    meta: dict = {}
    if method == "embed":
        train, skipped = _examples(ws, taxonomy)
        summary |= {"n_train": len(train), "n_train_skipped": skipped}
        if targets:
            results, meta = _predict_embed(ws, taxonomy, train, targets)
    elif targets:  # nothing to label: no model to load
        results, meta = _predict_llm(ws, taxonomy, model, targets, batch_size, progress)
    rows = [{"target_id": t["id"], "value": r["task"], "classifier": classifier, "confidence": r["confidence"],
             "job_id": job_id, "meta": meta | _label_meta(r)}
            for t, r in zip(targets, results, strict=True) if r["task"] is not None]
    n_new = ws.store.insert_labels(labels_table(rows))
    failures = [r["error"] for r in results if r["task"] is None]
    counts = Counter(r["value"] for r in rows)
    confidences = [r["confidence"] for r in rows]
    return summary | {
        "n_labelled": n_new, "n_failed": len(failures), "failures": Counter(failures).most_common(5),
        "counts": dict(counts.most_common()),
        "mean_confidence": float(np.mean(confidences)) if confidences else None,
    }


def _label_meta(result: Mapping) -> dict:
    """What a label row keeps of a prediction: the 3 most likely classes (what else the
    classifier considered) and, for the llm, which prompt fitted (full | names | cut)."""
    best = sorted(result["probs"].items(), key=lambda kv: -kv[1])[:3]
    meta: dict = {"top": {name: round(p, 4) for name, p in best}}
    if "prompt" in result:
        meta["prompt"] = result["prompt"]
    return meta


def relabel(ws, instruction_id: str, task: str, reviewer: str | None = None) -> str:
    """Record a human's task for an instruction (it wins over the imported and model labels);
    returns the label id. Relabels are append-only: the latest one is current."""
    _check_task(get_taxonomy(ws), task)
    if ws.store.target_kind(instruction_id) != "instruction":
        raise ValueError(f"no instruction with id {instruction_id!r}")
    reviewer = reviewer.strip() if reviewer and reviewer.strip() else None
    # The time is part of the id: relabelling A, then B, then A again adds three rows, and the
    # last is current (an id from the value alone would make the third a no-op).
    stamp = datetime.now(timezone.utc).isoformat()
    row = {"id": label_id(instruction_id, KIND, task, HUMAN, None, stamp), "target_id": instruction_id,
           "value": task, "classifier": HUMAN, "confidence": None, "job_id": None, "reviewer": reviewer,
           "meta": {"at": stamp}}
    table = labels_table([row])
    ws.store.insert_labels(table)
    return table["id"][0].as_py()


def task_of(ws, instruction_id: str) -> dict | None:
    """Current task (task, source, confidence), the imported label, and the label history."""
    found = ws.store.task_of(instruction_id)
    if found is not None:
        found["family"] = get_taxonomy(ws).family(found["task"]) if found["task"] else None
    return found


def task_counts(ws, selection: ExploreFilter | None = None):
    """Current tasks over a selection: DataFrame (task, family, n, human, imported, model,
    mean_confidence); task None counts instructions with no task, family None a task that the
    taxonomy does not hold."""
    df = ws.store.current_task_counts(selection)
    taxonomy = get_taxonomy(ws)
    df.insert(1, "family", [taxonomy.family(t) if t is not None else None for t in df["task"]])
    return df


def holdout_accuracy(ws, method: str = "embed", test_share: float = 0.25, seed: int = 0, model: str | None = None,
                     selection: ExploreFilter | None = None, limit: int | None = None, batch_size: int = 4,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """How well a classifier recovers the workspace's own labels: split the labelled instructions
    (imported and human, stratified by task), train on one part (embed) and report accuracy on
    the other, with the majority-class baseline. The llm method learns nothing; it is scored on
    the same held-out part, or its first `limit` items (to bound the time). Writes nothing."""
    _classifier_name(method, model)
    taxonomy = get_taxonomy(ws)
    examples, skipped = _examples(ws, taxonomy, selection)
    if len(examples) < 2:
        raise ValueError(f"holdout accuracy needs at least 2 labelled instructions, found {len(examples)}")
    by_id = {r["id"]: r for r in examples}
    train_ids, test_ids = split(list(by_id), test_share, seed, strata=[r["task"] for r in by_id.values()])
    if limit is not None:
        test_ids = test_ids[: int(limit)]
    train, test = [by_id[i] for i in train_ids], [by_id[i] for i in test_ids]
    if method == "embed":
        results, _ = _predict_embed(ws, taxonomy, train, test)
    else:
        results, _ = _predict_llm(ws, taxonomy, model, test, batch_size, progress)
    truth = [r["task"] for r in test]
    evaluation = evaluate(truth, [r["task"] for r in results])
    majority, baseline = majority_baseline([r["task"] for r in train], truth)
    return {"method": method, "classifier": _classifier_name(method, model), "test_share": test_share, "seed": seed,
            "n_train": len(train), "n_test": len(test), "n_skipped": skipped, "evaluation": evaluation,
            "accuracy": evaluation.accuracy, "majority_class": majority, "majority": baseline}


def accuracy_report(result: Mapping) -> dict:
    """holdout_accuracy's result as plain JSON values (what the CLI prints and the owner hands
    back): proportions as {value, k, n, low, high}."""
    out = {k: v for k, v in result.items() if k not in ("evaluation", "accuracy", "majority")}
    return out | result["evaluation"].to_dict() | {"majority": _proportion_dict(result["majority"])}
