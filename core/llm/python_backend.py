"""The `python` backend: a named Python function as a model (DESIGN.md §5).

For synthetic tasks with a known answer (core/synthetic.py): a teacher that solves them with a
chosen, systematic error rate, and an exact-match judge, so a loop can be shown to learn without
any model download. The spec names the function as "module:function":

    ModelSpec("teacher", backend="python", path="core.synthetic:addition_teacher",
              extra={"options": {"error_rate": 0.7}})
    ModelSpec("judge", backend="python", path="core.synthetic:addition_judge")

`extra` (all optional):
- `options`: keyword arguments for the function (checked against its signature when loaded).
- `role`: "generator" or "judge"; default: the function's `winnow_role` attribute, else generator.
- `modules`: module names besides core.synthetic whose functions the spec may name (see below).

Two roles:
- **generator** (teacher, student-like): `fn(conversation, **options) -> str` answers the
  conversation (a list of {role, content}). A function that also takes `rng` gets a
  random.Random per (prompt, sample), seeded from params.seed as other backends seed sampling,
  so its `n` samples differ and a run is reproducible; one without `rng` is deterministic and its
  n samples are one answer. Stop strings and max_tokens apply as usual.
- **judge**: `fn(instruction, response, *, scale=(low, high), **options) -> number` scores one
  answer. The judge stage builds its prompts from core/prompts templates; this backend reads the
  instruction and answer back out of a prompt by matching it against each judge template's
  layout (the template's text with its placeholders turned into groups: the hook is the
  template files themselves, so a reworded template keeps working). In generate mode it writes
  what the judge's parser reads ("Score: 5", "Winner: A"); in probability mode
  (`choice_logprobs`) it puts log-probability 0 on the chosen label and -inf on the others (a
  score between two labels splits the mass so the expected score is the function's). Pairwise
  prompts are answered by scoring both answers. Aspect and listwise rubrics are not served.
  A prompt that fits no template, or a function that raises, fails that call only (an `error`
  generation, a failed ChoiceLogprobs: a call_error row, never a made-up score).

Tokens are characters: `count_tokens` and `Generation.n_tokens` count characters, and
`max_tokens` cuts an answer after that many characters. `score` (log P(response)) is not
defined for a function and raises NotImplementedError.

Security: a spec is data (a job config, a shared workspace), so it must not run arbitrary code.
Only plain functions defined in an allowed module are served: those of core.synthetic (and its
submodules) that are marked as models (a `winnow_role` attribute: not its helpers), plus any
public function of the modules a spec lists in extra["modules"] (listing a module is the opt-in),
which may not be standard-library modules (no "os:system"). Names are resolved with importlib
and getattr, never eval; private names (a leading "_") and functions merely imported into an
allowed module are refused.
"""

from __future__ import annotations

import importlib
import inspect
import math
import random
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core.llm.base import (
    Backend,
    ChoiceLogprobs,
    Conversation,
    Generation,
    GenerationParams,
    ScoreResult,
    as_conversation,
    check_choices,
    open_turn,
    sample_seed,
    too_long_generations,
)

ALLOWED_MODULES = ("core.synthetic",)
ROLES = ("generator", "judge")
EXTRA_KEYS = {"options", "role", "modules"}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<function>[A-Za-z][A-Za-z0-9_]*)$")
MODULE_RE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*$")


# --------------------------------------------------------------------------------------------
# Naming and resolving functions
# --------------------------------------------------------------------------------------------


def check_modules(modules) -> tuple[str, ...]:
    """The extra modules a spec allows: dotted names, none from the standard library."""
    if modules is None:
        return ()
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise ValueError(f"extra modules must be a list of module names, not {modules!r}")
    out = []
    for module in modules:
        if not isinstance(module, str) or not MODULE_RE.match(module) or any(p.startswith("_")
                                                                              for p in module.split(".")):
            raise ValueError(f"extra modules: {module!r} is not a public module name like 'mypackage.tasks'")
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            raise ValueError(f"extra modules: {module!r} is a standard-library module; the python backend serves "
                             "functions of your own modules only")
        out.append(module)
    return tuple(out)


def _allowed(module: str, modules: Sequence[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in (*ALLOWED_MODULES, *modules))


def check_path(path, modules: Sequence[str] = ()) -> tuple[str, str]:
    """(module, function) of a "module:function" path in an allowed module; a ValueError says
    what is wrong. Nothing is imported."""
    match = PATH_RE.match(path) if isinstance(path, str) else None
    if not match or any(p.startswith("_") for p in match.group("module").split(".")):
        raise ValueError(f"a python model's path must be 'module:function' (e.g. 'core.synthetic:addition_teacher'), "
                         f"public names only, not {path!r}")
    module, function = match.group("module"), match.group("function")
    if not _allowed(module, check_modules(modules)):
        allowed = ", ".join((*ALLOWED_MODULES, *modules))
        raise ValueError(f"module {module!r} is not allowed for python models (allowed: {allowed}); name it in the "
                         f"spec's extra modules to serve your own functions")
    return module, function


def resolve(path: str, modules: Sequence[str] = ()) -> Callable:
    """The function a path names: imported with importlib, a plain function defined in that module."""
    module_name, function_name = check_path(path, modules)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"python model {path!r}: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, function_name, None)
    builtin = _allowed(module_name, ())
    if fn is None or (builtin and inspect.isfunction(fn) and not hasattr(fn, "winnow_role")):
        public = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                        and v.__module__ == module_name and (hasattr(v, "winnow_role") or not builtin))
        raise ValueError(f"python model {path!r}: module {module_name} has no model function {function_name!r}; "
                         f"its model functions: {', '.join(public) or 'none'}")
    if not inspect.isfunction(fn):
        raise ValueError(f"python model {path!r}: {function_name} is a {type(fn).__name__}, not a function")
    if fn.__module__ != module_name:
        raise ValueError(f"python model {path!r}: {function_name} is defined in {fn.__module__}, not in "
                         f"{module_name}; name it where it is defined")
    return fn


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


@dataclass(frozen=True)
class FunctionModel:
    """A resolved python model: its function, role and options, checked against each other."""

    path: str
    fn: Callable
    role: str
    options: dict

    @classmethod
    def from_extra(cls, path: str, extra: Mapping | None) -> FunctionModel:
        extra = dict(extra or {})
        unknown = set(extra) - EXTRA_KEYS
        if unknown:
            raise ValueError(f"unknown python backend option(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(EXTRA_KEYS))}")
        options = check_options(extra.get("options"))
        fn = resolve(path, extra.get("modules") or ())
        role = check_role(extra.get("role") or getattr(fn, "winnow_role", "generator"))
        placeholder = ([{"role": "user", "content": ""}],) if role == "generator" else ("", "")
        supplied = "rng" if role == "generator" else "scale"  # what the backend passes when taken
        try:  # options the function does not take fail here, not on the first call
            inspect.signature(fn).bind(*placeholder, **options, **({supplied: None} if _accepts(fn, supplied) else {}))
        except TypeError as exc:
            what = "fn(conversation, **options)" if role == "generator" else "fn(instruction, response, **options)"
            raise ValueError(f"python model {path!r} ({role}) must be callable as {what} with options "
                             f"{options}: {exc}") from None
        return cls(path, fn, role, options)


def check_options(options) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict) or any(not isinstance(k, str) or not k.isidentifier() for k in options):
        raise ValueError(f"extra options must be a dict of keyword arguments, not {options!r}")
    return dict(options)


def check_role(role) -> str:
    if role not in ROLES:
        raise ValueError(f"a python model's role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_spec(spec) -> None:
    """What a ModelSpec with backend 'python' must hold, without importing anything (called from
    ModelSpec.__post_init__; the function itself is resolved by check_files and at load)."""
    extra = spec.extra
    check_path(spec.path, check_modules(extra.get("modules")))
    check_options(extra.get("options"))
    if extra.get("role") is not None:
        check_role(extra["role"])
    if spec.chat_template is not None or spec.trust_remote_code or spec.dtype != "auto":
        raise ValueError("a python model has no chat template, remote code or dtype; "
                         "leave chat_template, trust_remote_code and dtype unset")


# --------------------------------------------------------------------------------------------
# Reading judge prompts back
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeLayout:
    """One judge template's user message as a pattern: which rubric and mode it belongs to."""

    template: str
    rubric: object  # core.judge.Rubric
    mode: str
    pattern: re.Pattern


def _layout_pattern(text: str) -> re.Pattern:
    """The template's text with each placeholder as a group: the rendered message matches it."""
    parts, seen, pos = [], set(), 0
    for m in string.Template.pattern.finditer(text):
        parts.append(re.escape(text[pos:m.start()]))
        name = m.group("named") or m.group("braced")
        if m.group("escaped") is not None:
            parts.append(re.escape("$"))
        elif name is None:
            raise ValueError(f"a judge template has an invalid placeholder at {text[m.start():m.start() + 20]!r}")
        else:
            # Lazy groups: a field stops at the first place the template's next text follows it
            # (the last one at the end), so a response quoting "[End of answer]" stays whole.
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
            seen.add(name)
        pos = m.end()
    parts.append(re.escape(text[pos:]))
    return re.compile("".join(parts), re.S)


def judge_layouts() -> list[JudgeLayout]:
    """The layouts of every pointwise (non-aspect) and pairwise rubric, in both modes, read from
    the template files now (an edited template is picked up at once)."""
    from core import judge, prompts

    out = []
    for rubric in judge.RUBRICS.values():
        if rubric.kind not in ("pointwise", "pairwise") or rubric.aspects:
            continue
        for mode in ("generate", "probability") if rubric.probability else ("generate",):
            name = rubric.template_for(mode)
            user = prompts.load(name).split_turns()[0]
            out.append(JudgeLayout(name, rubric, mode, _layout_pattern(user.text)))
    return out


@dataclass(frozen=True)
class JudgeRequest:
    rubric: object  # core.judge.Rubric
    mode: str
    fields: dict  # instruction, response | answer_a, answer_b


def read_judge_request(conversation: Conversation, layouts: Sequence[JudgeLayout]) -> JudgeRequest:
    """The rubric and fields of a judge prompt (its last user message); a ValueError when it
    fits no judge template."""
    users = [m["content"] for m in conversation if m["role"] == "user"]
    if not users:
        raise ValueError("the judge conversation has no user message")
    found = [(layout, m) for layout in layouts if (m := layout.pattern.fullmatch(users[-1]))]
    rubrics = {layout.rubric.name for layout, _ in found}
    if not found:
        templates = ", ".join(layout.template for layout in layouts)
        raise ValueError(f"the prompt fits no pointwise or pairwise judge template ({templates}); "
                         f"it starts {users[-1][:80]!r}")
    if len(rubrics) > 1:
        raise ValueError(f"the prompt fits the templates of several rubrics ({', '.join(sorted(rubrics))})")
    layout, match = found[0]
    return JudgeRequest(layout.rubric, layout.mode, match.groupdict())


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class PythonBackend(Backend):
    """A python function as a generator or a judge (see the module docstring)."""

    def __init__(self, model: FunctionModel, name: str | None = None, context_length: int | None = None):
        self.model = model
        self.name = name or model.path
        self.context_length = context_length
        self.supports_choice_logprobs = model.role == "judge"

    @classmethod
    def from_spec(cls, spec) -> PythonBackend:
        return cls(FunctionModel.from_extra(spec.path, spec.extra), name=spec.name,
                   context_length=spec.context_length)

    @property
    def role(self) -> str:
        return self.model.role

    def count_tokens(self, conversation: Conversation) -> int:
        return sum(len(m["content"]) for m in as_conversation(conversation))

    # -- generate -------------------------------------------------------------------------

    def generate(self, conversations: list[Conversation], params: GenerationParams | None = None
                 ) -> list[list[Generation]]:
        params = params or GenerationParams()
        layouts = judge_layouts() if self.role == "judge" else ()
        out = []
        for conversation in conversations:
            conversation = as_conversation(conversation)
            n_prompt = self.count_tokens(conversation)
            if self.context_length is not None and n_prompt + params.max_tokens > self.context_length:
                out.append(too_long_generations(params.n, n_prompt, params.max_tokens, self.context_length))
                continue
            out.append([self._sample(conversation, params, k, n_prompt, layouts) for k in range(params.n)])
        return out

    def _sample(self, conversation: Conversation, params: GenerationParams, k: int, n_prompt: int,
                layouts) -> Generation:
        try:
            if self.role == "judge":
                text = self._verdict_text(read_judge_request(conversation, layouts))
            else:
                kwargs = dict(self.model.options)
                if _accepts(self.model.fn, "rng"):
                    seed = None if params.seed is None else sample_seed(params.seed, k, repr(conversation))
                    kwargs["rng"] = random.Random(seed)
                text = self.model.fn(conversation, **kwargs)
            if not isinstance(text, str):
                raise TypeError(f"{self.model.path} returned a {type(text).__name__}, not a string")
            if params.guided_choice is not None and text not in params.guided_choice:
                raise ValueError(f"{self.model.path} answered {text!r:.60}, not one of guided_choice "
                                 f"{list(params.guided_choice)}")
            if params.guided_regex is not None and not re.fullmatch(params.guided_regex, text, re.S):
                raise ValueError(f"{self.model.path} answered {text!r:.60}, which guided_regex does not match")
        except Exception as exc:  # one failed call, not a failed batch: the caller records why
            return Generation("", "error", n_prompt, 0, None, None, f"{type(exc).__name__}: {exc}")
        text, finish = _cut(text, params)
        return Generation(text, finish, n_prompt, len(text), None, None)

    # -- judging --------------------------------------------------------------------------

    def _score(self, instruction: str, response: str, scale: tuple[float, float]) -> float:
        kwargs = dict(self.model.options)
        if _accepts(self.model.fn, "scale"):
            kwargs["scale"] = scale
        value = self.model.fn(instruction, response, **kwargs)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not scale[0] <= value <= scale[1]:
            raise ValueError(f"{self.model.path} scored {value!r}, not a number on the scale "
                             f"{scale[0]:g}–{scale[1]:g}")
        return float(value)

    def _verdict(self, request: JudgeRequest) -> float | str:
        """A pointwise score on the rubric's scale, or the pairwise winner label (A, B or tie)."""
        rubric, f = request.rubric, request.fields
        if rubric.kind == "pairwise":
            a = self._score(f["instruction"], f["answer_a"], PAIR_SCALE)
            b = self._score(f["instruction"], f["answer_b"], PAIR_SCALE)
            return "A" if a > b else "B" if b > a else "tie"
        return self._score(f["instruction"], f["response"], (float(rubric.scale_min), float(rubric.scale_max)))

    def _verdict_text(self, request: JudgeRequest) -> str:
        """The verdict line alone: short, so even a small max_tokens keeps it whole."""
        verdict = self._verdict(request)
        return f"Winner: {verdict}" if isinstance(verdict, str) else f"Score: {verdict:g}"

    def choice_logprobs(self, conversations: list[Conversation], choices: Sequence[str], *,
                        prefill: str = "") -> list[ChoiceLogprobs]:
        labels = check_choices(choices)
        if self.role != "judge":
            raise NotImplementedError(f"{self.model.path} is a generator, not a judge: it has no label "
                                      "log-probabilities (set extra role 'judge' for a scoring function)")
        layouts = judge_layouts()
        out = []
        for conversation in conversations:
            conversation = open_turn(conversation)
            n_prompt = self.count_tokens(conversation) + len(prefill)
            try:
                out.append(ChoiceLogprobs(label_logprobs(self._verdict(read_judge_request(conversation, layouts)),
                                                         labels), n_prompt))
            except Exception as exc:
                out.append(ChoiceLogprobs.failed(f"error: {type(exc).__name__}: {exc}", n_prompt))
        return out

    def score(self, conversations: list[Conversation], responses: list[str | list[int]]) -> list[ScoreResult]:
        raise NotImplementedError(f"the python backend ({self.model.path}) has no log-probabilities: a function "
                                  "gives an answer, not a distribution over texts; use an hf model where "
                                  "log P(response) is needed (e.g. IFD)")


# Pairwise prompts score both answers on this scale (a judge function's default).
PAIR_SCALE = (1.0, 5.0)


def label_logprobs(verdict: float | str, labels: Sequence[str]) -> list[float]:
    """Log-probabilities over `labels` (as the judge stage passes them, " 5" or " A") putting all
    the mass on the verdict: log 0 on its label, -inf elsewhere. A score between two whole labels
    splits the mass between them so that the expected label value is the score."""
    stripped = [label.strip() for label in labels]
    if isinstance(verdict, str):
        mass = {verdict: 1.0} if verdict in stripped else {"A": 0.5, "B": 0.5} if verdict == "tie" else {}
    else:
        low, high = math.floor(verdict), math.ceil(verdict)
        mass = {str(low): 1.0} if low == high else {str(low): high - verdict, str(high): verdict - low}
    if not mass or any(key not in stripped for key in mass):
        raise ValueError(f"the verdict {verdict!r} has no label among {list(labels)}")
    return [math.log(mass[s]) if mass.get(s, 0) > 0 else -math.inf for s in stripped]


def _cut(text: str, params: GenerationParams) -> tuple[str, str]:
    """Apply stop strings (cut before the first) and max_tokens (characters)."""
    cuts = [i for i in (text.find(s) for s in params.stop) if i >= 0]
    if cuts:
        text = text[:min(cuts)]
    if len(text) > params.max_tokens:
        return text[:params.max_tokens], "length"
    return text, "stop"
