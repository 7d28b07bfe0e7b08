"""The one interface every model backend implements (DESIGN.md §5).

A conversation is a list of chat messages, `{"role": "system"|"user"|"assistant", "content": str}`.
Backends take batches of conversations and return, per conversation, `n` `Generation`s in the
order given. A conversation that cannot fit the model's context (prompt tokens + max_tokens) is
marked `too_long` before anything is submitted; it never fails its batch. Log-probabilities are
natural logs under the model itself (temperature 1, before top-p/top-k), so a response's score
does not depend on the sampling settings that produced it.

`choice_logprobs` is what a probability judge needs (DESIGN.md §6): for one prompt and a short
list of labels ("1".."10", "A"/"B"/"tie"), how likely the model is to write each label next. It
scores each label's full token sequence, so a label of several tokens ("10" is "1" + "0" under
most BPE tokenizers) is one event, and makes the labels mutually exclusive: a label loses the
mass of the labels that extend it token by token ("1" gives up "10"; see `exclusive_logprobs`).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

FINISH_REASONS = ("stop", "length", "too_long", "error")
DTYPES = ("auto", "float32", "float16", "bfloat16")  # the weights' dtype a spec may ask for
ROLES = ("system", "user", "assistant")
MAX_SEED = 2**63 - 1

Message = dict[str, str]
Conversation = list[Message]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings, validated on construction; errors show the bad value.

    temperature 0 means greedy decoding (then every one of the `n` samples is the same answer).
    top_k 0 means no top-k cut. A `seed` makes sampling reproducible: each (prompt, sample index)
    gets its own random stream derived from it, so a result does not depend on which other
    prompts shared its batch. `stop` strings end a sample and are not part of its text.
    `guided_choice` / `guided_regex` constrain the output (judges); not every backend has both.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = True
    guided_choice: tuple[str, ...] | None = None
    guided_regex: str | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or not 0 <= self.temperature <= 5:
            raise ValueError(f"temperature must be a number between 0 and 5, not {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], not {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer ≥ 0 (0 = off), not {self.top_k!r}")
        if not _is_int(self.max_tokens) or not 1 <= self.max_tokens <= 1_000_000:
            raise ValueError(f"max_tokens must be an integer ≥ 1, not {self.max_tokens!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be None or an integer between 0 and 2**63-1, not {self.seed!r}")
        if not _is_int(self.n) or not 1 <= self.n <= 256:
            raise ValueError(f"n (samples per prompt) must be an integer between 1 and 256, not {self.n!r}")
        if not isinstance(self.logprobs, bool):
            raise ValueError(f"logprobs must be True or False, not {self.logprobs!r}")
        stop = self.stop
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        try:
            stop = tuple(stop)
        except TypeError:
            raise ValueError(f"stop must be a string or a list of strings, not {self.stop!r}") from None
        if any(not isinstance(s, str) or not s for s in stop) or len(stop) > 16:
            raise ValueError(f"stop must hold at most 16 non-empty strings, not {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        if self.guided_choice is not None:
            choice = self.guided_choice
            if isinstance(choice, str) or not isinstance(choice, Sequence):
                raise ValueError(f"guided_choice must be a list of strings, not {choice!r}")
            choice = tuple(choice)
            if not choice or any(not isinstance(c, str) or not c for c in choice):
                raise ValueError(f"guided_choice must be a non-empty list of non-empty strings, not {choice!r}")
            object.__setattr__(self, "guided_choice", choice)
        if self.guided_regex is not None and (not isinstance(self.guided_regex, str) or not self.guided_regex):
            raise ValueError(f"guided_regex must be a non-empty string, not {self.guided_regex!r}")
        if self.guided_choice is not None and self.guided_regex is not None:
            raise ValueError("give guided_choice or guided_regex, not both")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        """JSON-ready, for lineage (`responses.params`)."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        if self.guided_choice is not None:
            d["guided_choice"] = list(self.guided_choice)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GenerationParams:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown generation parameter(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class Generation:
    """One sampled answer. `token_ids`/`token_logprobs` include the end-of-turn token when the
    model emitted one, and the tokens that completed a stop string (whose text is cut off)."""

    text: str
    finish_reason: str  # stop | length | too_long | error
    n_prompt_tokens: int = 0
    n_tokens: int = 0
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None  # None when the backend could not provide them
    error: str | None = None

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, not {self.finish_reason!r}")

    @property
    def ok(self) -> bool:
        return self.finish_reason in ("stop", "length")

    @property
    def sum_logprob(self) -> float | None:
        return float(sum(self.token_logprobs)) if self.token_logprobs else None

    @property
    def mean_logprob(self) -> float | None:
        return float(sum(self.token_logprobs) / len(self.token_logprobs)) if self.token_logprobs else None


@dataclass
class ScoreResult:
    """log P(response | prompt) under the chat template, over the response tokens only."""

    sum_logprob: float | None
    mean_logprob: float | None
    n_tokens: int
    too_long: bool = False
    token_logprobs: list[float] | None = field(default=None, repr=False)
    error: str | None = None

    @classmethod
    def from_logprobs(cls, logprobs: list[float]) -> ScoreResult:
        total = float(sum(logprobs))
        return cls(total, total / len(logprobs) if logprobs else None, len(logprobs), False, list(logprobs))


@dataclass
class ChoiceLogprobs:
    """log P(label | prompt) for each label of one prompt, in the order given, mutually exclusive
    (the probabilities sum to at most 1; what is left is mass on anything else). On a failed call
    `logprobs` is None and `error` says why; `too_long` when the prompt and the longest label do
    not fit the context. A label the backend could not see (a server's top-logprobs list without
    it) is -inf: no mass counted for it."""

    logprobs: list[float] | None
    n_prompt_tokens: int = 0
    too_long: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.logprobs is not None

    @classmethod
    def failed(cls, error: str, n_prompt_tokens: int = 0, too_long: bool = False) -> ChoiceLogprobs:
        return cls(None, n_prompt_tokens, too_long, error)


def check_choices(choices) -> list[str]:
    """Labels for choice_logprobs: a non-empty list of distinct non-empty strings."""
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise ValueError(f"choices must be a list of strings, not {choices!r}")
    out = list(choices)
    if not out or any(not isinstance(c, str) or not c for c in out):
        raise ValueError(f"choices must be a non-empty list of non-empty strings, not {out!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"choices must be distinct, not {out!r}")
    return out


def exclusive_logprobs(logprobs: Sequence[float], token_seqs: Sequence[Sequence[int]]) -> list[float]:
    """Make label log-probabilities mutually exclusive.

    log P(tokens of "1") counts every answer that starts with those tokens, "10" included. A label
    keeps only the mass that does not continue into another label: P(label) minus the mass of the
    labels that extend it directly (those with no other label in between, whose masses are
    disjoint). Labels whose token sequences are equal cannot be told apart: an error."""
    seqs = [tuple(s) for s in token_seqs]
    if len(seqs) != len(logprobs):
        raise ValueError(f"{len(logprobs)} log-probabilities for {len(seqs)} token sequences")
    if len(set(seqs)) != len(seqs):
        raise ValueError(f"two labels have the same tokens, so they cannot be told apart: {seqs}")

    def extends(longer: tuple, shorter: tuple) -> bool:
        return len(longer) > len(shorter) and longer[: len(shorter)] == shorter

    out = []
    for lp, seq in zip(logprobs, seqs, strict=True):
        above = [j for j, other in enumerate(seqs) if extends(other, seq)]
        direct = [j for j in above if not any(extends(seqs[j], seqs[k]) for k in above if k != j)]
        lp = float(lp)
        if not direct or lp == -math.inf:
            out.append(lp)
            continue
        # log(P_i - sum P_j), computed relative to P_i so tiny probabilities do not underflow.
        share = sum(math.exp(float(logprobs[j]) - lp) for j in direct)
        out.append(lp + math.log1p(-share) if share < 1 else -math.inf)
    return out


def as_conversation(item) -> Conversation:
    """A conversation, checked; a bare string is one user message."""
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if not isinstance(item, (list, tuple)) or not item:
        raise ValueError(f"a conversation must be a non-empty list of messages, not {item!r:.200}")
    out = []
    for i, message in enumerate(item):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, "
                             f"not {message!r:.200}")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def open_turn(conversation) -> Conversation:
    """A conversation for label scoring: checked, and ending with the user's turn (the assistant's
    start, if any, is passed separately as the prefill)."""
    conversation = as_conversation(conversation)
    if conversation[-1]["role"] == "assistant":
        raise ValueError("a conversation for label scoring must end with the user's turn; pass the start of the "
                         f"assistant's answer as prefill, not as a message ({conversation[-1]['content']!r:.60})")
    return conversation


def too_long_message(n_prompt_tokens: int, max_tokens: int, context_length: int) -> str:
    return (f"prompt of {n_prompt_tokens} tokens + max_tokens {max_tokens} exceeds the context "
            f"length {context_length}")


def too_long_generations(n: int, n_prompt_tokens: int, max_tokens: int, context_length: int) -> list[Generation]:
    message = too_long_message(n_prompt_tokens, max_tokens, context_length)
    return [Generation("", "too_long", n_prompt_tokens, 0, [], [], message) for _ in range(n)]


def sample_seed(seed: int, sample_index: int, prompt_key: Sequence[int] | str) -> int:
    """The seed of one (prompt, sample) stream: independent of batching and order."""
    key = prompt_key if isinstance(prompt_key, str) else ",".join(map(str, prompt_key))
    digest = hashlib.sha256(f"{seed}\x1f{sample_index}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


class Backend(ABC):
    """A loaded model. Use as a context manager or call close() to free it."""

    name: str = "backend"
    context_length: int | None = None

    @abstractmethod
    def generate(self, conversations: list[Conversation], params: GenerationParams | None = None
                 ) -> list[list[Generation]]:
        """`params.n` generations per conversation, in the order given."""

    @abstractmethod
    def score(self, conversations: list[Conversation], responses: list[str | list[int]]) -> list[ScoreResult]:
        """log-probability of each response (text, or token ids) given its conversation."""

    # Whether choice_logprobs is available without asking a server first (judges default to the
    # probability mode where it is).
    supports_choice_logprobs: bool = False

    def choice_logprobs(self, conversations: list[Conversation], choices: Sequence[str], *,
                        prefill: str = "") -> list[ChoiceLogprobs]:
        """Per conversation, log P(label) for each of `choices` as the next text, mutually exclusive
        (see exclusive_logprobs). `prefill` starts the assistant's turn ("Rating:"): the labels
        follow it. The conversation must end with a user message."""
        raise NotImplementedError(f"the {type(self).__name__} backend has no label log-probabilities "
                                  "(choice_logprobs); use the generate judge mode")

    @abstractmethod
    def count_tokens(self, conversation: Conversation) -> int:
        """Tokens of the conversation under the chat template (with the generation prompt when the
        last message is not the assistant's)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (GPU memory, engine processes, connections)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} context={self.context_length}>"
