"""Prompt templates as files: `core/prompts/<name>.txt`, rendered with `string.Template`.

A template is plain text with `$name` (or `${name}`) placeholders; a literal dollar sign is
written `$$`. Rendering is strict: a missing value or an unexpected one raises, so a typo in a
stage never ships a prompt with a hole in it. Substituted values are inserted verbatim (a `$` or
`{` inside a model answer is never re-interpreted). See README.md in this folder.

`template_hash` (the first 12 hex digits of the file's sha256) goes into every row a template
produced, so "which prompt wrote this?" is a lookup even after the file changes.

A template may also start the assistant's answer (probability judges: the prompt must end exactly
where the score goes): a line `=== assistant ===` ends the user's message, and what follows it,
without the file's final newline, is the answer's pre-filled start ("Rating:").
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
HASH_HEX_DIGITS = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
ASSISTANT_MARKER = "=== assistant ==="

__all__ = ["ASSISTANT_MARKER", "PROMPTS_DIR", "PromptTemplate", "available", "load", "render", "template_hash"]


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    hash: str  # sha256 of the file's bytes, first 12 hex digits

    @property
    def placeholders(self) -> set[str]:
        """The names this template needs (`$$` escapes are not placeholders)."""
        found = set()
        for match in string.Template.pattern.finditer(self.text):
            name = match.group("named") or match.group("braced")
            if name:
                found.add(name)
        return found

    def render(self, **values: object) -> str:
        needed = self.placeholders
        missing = sorted(needed - values.keys())
        extra = sorted(values.keys() - needed)
        if missing or extra:
            raise ValueError(f"template {self.name!r} needs {sorted(needed)}; "
                             f"missing {missing}, unexpected {extra}")
        return string.Template(self.text).substitute({k: str(v) for k, v in values.items()})

    def split_turns(self) -> tuple[PromptTemplate, str]:
        """(the user's part, the assistant's pre-filled start) of a template with an
        ASSISTANT_MARKER line; (itself, "") without one. The hash stays the whole file's. The start
        may hold no placeholder: one prefill per template, so labels after it tokenise alike."""
        lines = self.text.split("\n")
        if ASSISTANT_MARKER not in lines:
            return self, ""
        at = lines.index(ASSISTANT_MARKER)
        user = PromptTemplate(self.name, "\n".join(lines[:at]), self.hash)
        prefill = "\n".join(lines[at + 1:])
        prefill = prefill[:-1] if prefill.endswith("\n") else prefill
        if PromptTemplate(self.name, prefill, self.hash).placeholders or "$" in prefill:
            raise ValueError(f"template {self.name!r}: the assistant's start after {ASSISTANT_MARKER!r} may not hold "
                             f"placeholders or '$', got {prefill!r}")
        return user, prefill


def _path(name: str) -> Path:
    if not _NAME.match(name or ""):
        raise ValueError(f"template name {name!r} is invalid: use lowercase letters, digits and '_'")
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name!r} (expected {path}); available: {available()}")
    return path


def load(name: str) -> PromptTemplate:
    """Read a template afresh (files are small; an edited file is picked up at once)."""
    data = _path(name).read_bytes()
    return PromptTemplate(name=name, text=data.decode("utf-8"),
                          hash=hashlib.sha256(data).hexdigest()[:HASH_HEX_DIGITS])


def render(name: str, **values: object) -> str:
    return load(name).render(**values)


def template_hash(name: str) -> str:
    return load(name).hash


def available() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
