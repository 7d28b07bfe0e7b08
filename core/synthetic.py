"""Synthetic tasks with a known answer: the teacher and the judge of the learning test (issue 13, item 7).

A synthetic task writes prompts whose answer a program can compute, so a loop's progress is a
number (exact match on held-out prompts), not an opinion. Two tasks:

- `addition`: 2-digit addition, the sum written least-significant digit first:
  "What is 47 + 38? Answer with the digits of the sum, least significant first." -> "58" (85).
  Reversed digits are what a small left-to-right model can learn in a short budget: each digit
  depends on the columns already written (the issue's sketch: normal order did not converge).
- `reversal`: "Reverse the letters of: abcde" -> "edcba".

The teacher is right except on a share (`error_rate`) of its task's hard cases, where it makes
the task's one systematic mistake: addition drops the carry from the units into the tens (47 + 38
-> 75, written "57"), reversal drops the last letter of the input. Which hard cases go wrong is
fixed per problem by a hash of (seed, task, problem): the same prompt always gets the same wrong
answer. Random noise would not do: under greedy decoding a student trained on randomly noisy
answers learns the majority answer and the noise washes out, so curation would have nothing to fix.

Functions served by the `python` model backend (core/llm/python_backend.py), by name:

    ModelSpec("teacher", backend="python", path="core.synthetic:addition_teacher")            # 70 % of carries dropped
    ModelSpec("teacher", backend="python", path="core.synthetic:addition_teacher",
              extra={"options": {"error_rate": 0.3, "seed": 1}})
    ModelSpec("judge", backend="python", path="core.synthetic:addition_judge")                # exact match, 5 or 1
    ModelSpec("expander", backend="python", path="core.synthetic:expander")                   # the expand stage's teacher

Generators take the conversation (a list of {role, content}) and answer its last user message;
judges take (instruction, response, scale=(low, high)) and return `high` for an exact match, else
`low`. `teacher` / `exact_match_judge` serve every task; the `addition_` / `reversal_` ones refuse
other tasks' prompts. `expander` answers the expand stage's prompts (core/expand.py) with a new
prompt of the seed's task and hardness class. Prompt files for Workspace.import_paths come from
`write_prompt_files`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ERROR_RATE = 0.7  # the sketch: the teacher drops the carry on 70 % of carry cases
# Winnow's task label for the imported prompts (core/tasks.py taxonomy), and the synthetic task's own name in meta.
TAXONOMY_LABEL = {"addition": "math", "addition-short": "math", "reversal": "rewriting"}

__all__ = ["DEFAULT_ERROR_RATE", "TASKS", "PromptFiles", "SyntheticTask", "addition_judge", "addition_teacher",
           "exact_match", "exact_match_judge", "expand_problem", "expander", "find_task", "oracle", "reference_answer",
           "reversal_judge", "reversal_teacher", "split_problems", "teacher", "teacher_answer", "write_prompt_files"]


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by its parts: which hard cases the teacher gets wrong."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SyntheticTask(ABC):
    """A task: how to write a problem as a prompt, read it back, solve it, and get it wrong."""

    name: str
    pattern: re.Pattern  # matches a whole prompt (stripped); its groups are the problem

    @abstractmethod
    def prompt(self, problem) -> str: ...

    @abstractmethod
    def problem_of(self, match: re.Match): ...

    @abstractmethod
    def answer(self, problem) -> str:
        """The right answer."""

    @abstractmethod
    def is_hard(self, problem) -> bool:
        """Whether the teacher's systematic mistake applies to this problem."""

    @abstractmethod
    def wrong_answer(self, problem) -> str:
        """The teacher's systematic mistake (never the right answer)."""

    @abstractmethod
    def sample(self, rng: random.Random, n: int) -> list:
        """n distinct problems (fewer if the task has fewer)."""

    def group(self, problem) -> Hashable:
        """Problems of one group never straddle the train / held-out split."""
        return problem

    def parse(self, instruction: str):
        """The problem a prompt states, or None when it is not this task's prompt."""
        match = self.pattern.fullmatch(instruction.strip())
        return self.problem_of(match) if match else None


class Addition(SyntheticTask):
    """a + b for 2-digit a, b (10..99), the sum's digits least-significant first. Hard: the units
    carry into the tens (45 % of the pairs); the mistake drops that carry (the answer of a + b - 10)."""

    name = "addition"
    pattern = re.compile(r"What is (\d{2}) \+ (\d{2})\? Answer with the digits of the sum, least significant first\.")
    low, high = 10, 99

    def prompt(self, problem) -> str:
        a, b = problem
        return f"What is {a} + {b}? Answer with the digits of the sum, least significant first."

    def problem_of(self, match: re.Match):
        a, b = int(match.group(1)), int(match.group(2))
        return (a, b) if self.low <= a <= self.high and self.low <= b <= self.high else None

    def answer(self, problem) -> str:
        return str(sum(problem))[::-1]

    def is_hard(self, problem) -> bool:
        a, b = problem
        return a % 10 + b % 10 >= 10

    def wrong_answer(self, problem) -> str:
        return str(sum(problem) - 10)[::-1]

    def sample(self, rng: random.Random, n: int) -> list:
        pairs = [(a, b) for a in range(self.low, self.high + 1) for b in range(self.low, self.high + 1)]
        return rng.sample(pairs, min(n, len(pairs)))

    def group(self, problem) -> Hashable:
        # 47 + 38 and 38 + 47 are one fact: both go to train or both to held-out.
        return tuple(sorted(problem))


class ShortAddition(Addition):
    """The same sums written as "47+38=" (answer "58"): a prompt of six characters, so a
    character-level student trained from scratch learns the task in a CPU minute (the learning
    test) instead of spending its budget reading the long prompt."""

    name = "addition-short"
    pattern = re.compile(r"(\d{2})\+(\d{2})=")

    def prompt(self, problem) -> str:
        a, b = problem
        return f"{a}+{b}="


class Reversal(SyntheticTask):
    """Reverse 3–8 lowercase letters. Hard: 6 letters or more; the mistake drops the input's last
    letter (the reversed answer misses its first character)."""

    name = "reversal"
    pattern = re.compile(r"Reverse the letters of: ([a-z]{3,8})")
    hard_length = 6

    def prompt(self, problem) -> str:
        return f"Reverse the letters of: {problem}"

    def problem_of(self, match: re.Match):
        return match.group(1)

    def answer(self, problem) -> str:
        return problem[::-1]

    def is_hard(self, problem) -> bool:
        return len(problem) >= self.hard_length

    def wrong_answer(self, problem) -> str:
        return problem[:-1][::-1]

    def sample(self, rng: random.Random, n: int) -> list:
        seen: dict[str, None] = {}
        while len(seen) < n:
            length = rng.randint(3, 8)
            seen.setdefault("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length)))
        return list(seen)


TASKS: dict[str, SyntheticTask] = {t.name: t for t in (Addition(), ShortAddition(), Reversal())}


def get_task(task: SyntheticTask | str) -> SyntheticTask:
    if isinstance(task, SyntheticTask):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task]


def find_task(instruction: str, task: SyntheticTask | str | None = None) -> tuple[SyntheticTask, object]:
    """(task, problem) of a synthetic prompt; a ValueError quotes a prompt no task reads."""
    if not isinstance(instruction, str):
        raise ValueError(f"a synthetic prompt is a string, not {type(instruction).__name__}")
    for candidate in ([get_task(task)] if task is not None else TASKS.values()):
        problem = candidate.parse(instruction)
        if problem is not None:
            return candidate, problem
    which = f"the {get_task(task).name} task" if task is not None else "any synthetic task"
    raise ValueError(f"not a prompt of {which}: {instruction.strip()[:120]!r}")


def _check_error_rate(error_rate: float) -> float:
    if isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)) or not 0 <= error_rate <= 1:
        raise ValueError(f"error_rate must be a number between 0 and 1, not {error_rate!r}")
    return float(error_rate)


def reference_answer(instruction: str, task: SyntheticTask | str | None = None) -> str:
    """The right answer to a synthetic prompt."""
    found, problem = find_task(instruction, task)
    return found.answer(problem)


def teacher_answer(instruction: str, error_rate: float = DEFAULT_ERROR_RATE, seed: int = 0,
                   task: SyntheticTask | str | None = None) -> str:
    """The teacher's answer: the systematic mistake on the hard problems whose hash falls under
    error_rate, the right answer otherwise. Deterministic in (seed, task, problem)."""
    error_rate = _check_error_rate(error_rate)
    found, problem = find_task(instruction, task)
    if found.is_hard(problem) and _unit(seed, found.name, problem) < error_rate:
        return found.wrong_answer(problem)
    return found.answer(problem)


def exact_match(prompt: str, answer: str | None, task: SyntheticTask | str | None = None) -> bool:
    """Whether `answer` is the right answer to the synthetic `prompt` (surrounding whitespace is
    ignored; nothing else is)."""
    return isinstance(answer, str) and answer.strip() == reference_answer(prompt, task)


# --------------------------------------------------------------------------------------------
# Functions for the python backend
# --------------------------------------------------------------------------------------------


def _last_user(conversation: Sequence[dict]) -> str:
    for message in reversed(conversation):
        if message.get("role") == "user":
            return message["content"]
    raise ValueError("the conversation has no user message to answer")


def teacher(conversation: Sequence[dict], error_rate: float = DEFAULT_ERROR_RATE, seed: int = 0) -> str:
    """Answers any synthetic task's prompt, with the systematic mistake on a share of hard cases.
    Asked to expand a seed (TAPIR's teacher writes new instructions too: an expansion prompt that
    quotes a synthetic prompt on a line of its own), it answers as `expander` does."""
    prompt = _last_user(conversation)
    if not any(t.parse(prompt) is not None for t in TASKS.values()) and _VARIATION.search(prompt):
        return expander(conversation, seed)
    return teacher_answer(prompt, error_rate, seed)


def addition_teacher(conversation: Sequence[dict], error_rate: float = DEFAULT_ERROR_RATE, seed: int = 0) -> str:
    """Answers addition prompts, dropping the carry on `error_rate` of the carry cases (default 70 %)."""
    return teacher_answer(_last_user(conversation), error_rate, seed, task="addition")


def reversal_teacher(conversation: Sequence[dict], error_rate: float = DEFAULT_ERROR_RATE, seed: int = 0) -> str:
    """Answers reversal prompts, dropping a letter on `error_rate` of the long words (default 70 %)."""
    return teacher_answer(_last_user(conversation), error_rate, seed, task="reversal")


def oracle(conversation: Sequence[dict]) -> str:
    """Always right (a teacher with error_rate 0)."""
    return reference_answer(_last_user(conversation))


def exact_match_judge(instruction: str, response: str, scale: tuple[float, float] = (1, 5)) -> float:
    """The top of the scale for an exact match, the bottom otherwise (the truth is recomputed
    from the instruction; the judge needs no reference file)."""
    return float(scale[1] if exact_match(instruction, response) else scale[0])


def addition_judge(instruction: str, response: str, scale: tuple[float, float] = (1, 5)) -> float:
    """exact_match_judge for addition prompts only."""
    return float(scale[1] if exact_match(instruction, response, task="addition") else scale[0])


def reversal_judge(instruction: str, response: str, scale: tuple[float, float] = (1, 5)) -> float:
    """exact_match_judge for reversal prompts only."""
    return float(scale[1] if exact_match(instruction, response, task="reversal") else scale[0])


# The python backend's default role for each function (a spec's extra["role"] may say otherwise).
for _fn in (teacher, addition_teacher, reversal_teacher, oracle):
    _fn.winnow_role = "generator"
for _fn in (exact_match_judge, addition_judge, reversal_judge):
    _fn.winnow_role = "judge"


# --------------------------------------------------------------------------------------------
# Expansion (TAPIR: new instructions of the seed's task and difficulty)
# --------------------------------------------------------------------------------------------

# Candidates drawn per seed: enough that each hardness class leaves more than the expand stage's
# 16 samples per seed, so different sample indexes give different problems.
EXPAND_POOL = 256
# The expansion prompt (core/prompts/expand.txt) numbers its samples "Variation k of n".
_VARIATION = re.compile(r"\bvariation (\d+)\b", re.I)


def expand_problem(task: SyntheticTask | str, problem, sample: int = 0, seed: int = 0):
    """A problem of the same task and hardness class (is_hard equal), not the seed itself, fixed
    by (seed, task, problem, sample); samples below the pool's size give distinct problems."""
    found = get_task(task)
    rng = random.Random(f"{seed}:expand:{found.name}:{problem!r}")
    hard = found.is_hard(problem)
    pool = [p for p in found.sample(rng, EXPAND_POOL) if p != problem and found.is_hard(p) == hard]
    if not pool:
        raise ValueError(f"the {found.name} task has no other problem of the hardness of {problem!r}")
    return pool[int(sample) % len(pool)]


def expander(conversation: Sequence[dict], seed: int = 0) -> str:
    """Answers an expansion prompt: the seed is the prompt's line that a synthetic task reads
    (the template quotes it verbatim), the sample index its "Variation k" (1-based; 1 when absent);
    returns a new prompt of the seed's task with the same hardness."""
    prompt = _last_user(conversation)
    for line in prompt.splitlines():
        try:
            found, problem = find_task(line)
        except ValueError:
            continue
        match = _VARIATION.search(prompt)
        sample = int(match.group(1)) - 1 if match else 0
        return found.prompt(expand_problem(found, problem, sample, seed))
    raise ValueError(f"the expansion prompt quotes no synthetic prompt on a line of its own: {prompt[:120]!r}")


expander.winnow_role = "generator"


# --------------------------------------------------------------------------------------------
# Prompt sets as import files
# --------------------------------------------------------------------------------------------


def split_problems(task: SyntheticTask | str, n_train: int, n_heldout: int, seed: int = 0) -> tuple[list, list]:
    """Distinct problems for training and held-out evaluation, seeded; no group (e.g. a pair of
    addends in either order) has problems on both sides."""
    found = get_task(task)
    for name, n in (("n_train", n_train), ("n_heldout", n_heldout)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an integer ≥ 0, not {n!r}")
    rng = random.Random(f"{seed}:{found.name}")
    # A few spare problems: a held-out group may take one more problem than n_heldout needs.
    problems = found.sample(rng, n_train + 2 * n_heldout)
    groups: dict[Hashable, list] = {}
    for problem in problems:  # in the sampled (random) order
        groups.setdefault(found.group(problem), []).append(problem)
    heldout, train = [], []
    for members in groups.values():
        (heldout if len(heldout) < n_heldout else train).extend(members)
    if len(train) < n_train or len(heldout) < n_heldout:
        raise ValueError(f"the {found.name} task has too few problems for n_train={n_train} and "
                         f"n_heldout={n_heldout}")
    return train[:n_train], heldout[:n_heldout]


@dataclass(frozen=True)
class PromptFiles:
    """Import files of one prompt set (JSON Lines). `train` / `heldout`: prompts only (format
    'prompts'); `*_reference`: the same prompts with the right answer as `output` (format
    'alpaca'), to import with role='reference'. Every row also carries `task` (Winnow's label),
    `synthetic` (the task's name) and `reference` (the right answer), kept in the instruction's meta."""

    train: Path
    heldout: Path
    train_reference: Path
    heldout_reference: Path
    n_train: int
    n_heldout: int


def _rows(found: SyntheticTask, problems: list, with_output: bool) -> str:
    lines = []
    for problem in problems:
        row = {"instruction": found.prompt(problem), "task": TAXONOMY_LABEL[found.name], "synthetic": found.name,
               "reference": found.answer(problem)}
        if with_output:
            row["output"] = found.answer(problem)
        lines.append(json.dumps(row) + "\n")
    return "".join(lines)


def write_prompt_files(folder: str | Path, task: SyntheticTask | str = "addition", n_train: int = 2000,
                       n_heldout: int = 200, seed: int = 0) -> PromptFiles:
    """Write a seeded train / held-out prompt set as Winnow import files under `folder`."""
    found = get_task(task)
    train, heldout = split_problems(found, n_train, n_heldout, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, problems in (("train", train), ("heldout", heldout)):
        for suffix, with_output in (("", False), ("_reference", True)):
            path = folder / f"{found.name}_{split}{suffix}.jsonl"
            path.write_text(_rows(found, problems, with_output), encoding="utf-8")
            paths[f"{split}{suffix}"] = path
    return PromptFiles(**paths, n_train=len(train), n_heldout=len(heldout))
