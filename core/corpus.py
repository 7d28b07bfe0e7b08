"""Unlabelled documents → passages for backtranslation (Humpback, arXiv 2308.06259, §2.2).

The paper's unlabelled data is "the text following a heading": each passage is the main text
of one section, with its heading as the title. A page goes through three steps:

1. extraction: HTML through trafilatura (the main-content extractor FineWeb uses), which drops
   navigation bars, sidebars and footers; markdown, reStructuredText and plain text through a
   light parser of their own. Every format becomes the same list of `Block`s: headings, prose
   paragraphs, and line-kept blocks (code, lists, tables) whose line breaks matter.
2. segmentation: a heading starts a new passage; paragraphs are packed up to `max_chars` on
   paragraph boundaries; a longer paragraph is cut at a sentence end, else at a space, never
   inside a word; code keeps its lines.
3. the paper's heuristic filters, each drop with its reason: too short, too long, duplicate
   (normalised text), heading mostly capitals, and chrome (a passage that is only navigation
   words, when an extractor lets one through).

Nothing here touches the catalog; `core.ingest` writes kept passages to `documents` and drops to
`corpus_drops` (migration 0014, core/store/corpus.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.corpus_extract import (  # noqa: F401 (public names of core.corpus)
    HTML_SUFFIXES,
    Block,
    extract_blocks,
    html_blocks,
    markdown_blocks,
    rst_blocks,
    text_blocks,
)

# The drops table is migration 0014_corpus_drops (core/migrations.py). Ids are content hashes of
# (dataset, file, segment, reason, text), so importing the same file again records nothing twice.

EXCERPT_CHARS = 200

# Drop reasons, stable codes a query can group by.
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
DUPLICATE = "duplicate"
HEADING_CAPS = "heading_caps"
CHROME = "chrome"
REASONS = (TOO_SHORT, TOO_LONG, DUPLICATE, HEADING_CAPS, CHROME)


@dataclass
class CorpusOptions:
    min_chars: int = 200
    max_chars: int = 2000
    # Humpback drops segments whose heading is mostly capitals ("CONTACT US", "MENU"): the share
    # of capitals among the heading's letters above which a passage is dropped.
    max_title_caps: float = 0.6
    # Shorter headings ("API", "HTTP", "FAQ") are acronyms more often than shouting: not judged.
    title_caps_min_letters: int = 6

    def __post_init__(self) -> None:
        if not 0 < self.min_chars < self.max_chars:
            raise ValueError(f"need 0 < min_chars < max_chars, got {self.min_chars} and {self.max_chars}")
        if not 0 < self.max_title_caps <= 1:
            raise ValueError(f"max_title_caps must be in (0, 1], got {self.max_title_caps}")


@dataclass(frozen=True)
class Passage:
    text: str
    title: str | None  # the section's heading, else the caller's default title (the file's name)
    line: int
    segment: int  # position among all of the file's passages, kept and dropped alike


@dataclass(frozen=True)
class Drop:
    text: str
    title: str | None
    line: int
    segment: int
    reason: str  # one of REASONS

    @property
    def n_chars(self) -> int:
        return len(self.text)

    @property
    def excerpt(self) -> str:
        return self.text[:EXCERPT_CHARS]


def normalise_for_dedup(text: str) -> str:
    """Case and spacing do not make a passage new (also the document id's input)."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------------------------
# Chrome: what a site wraps around its content
# --------------------------------------------------------------------------------------------

_CHROME_WORDS = re.compile(
    r"\b(?:index|modules|next|previous|topic|show|view|page|source|report|a|bug|found|table|of|contents|"
    r"this|edit|on|github|gitlab|navigation|quick|search|go|home|back|to|top|skip|main|content|"
    r"permalink|permanent|link|toggle|menu|sidebar|theme|light|dark|auto|print|download|pdf|"
    r"created|using|sphinx|built|with|made|material|for|mkdocs|read|the|docs|last|updated|"
    r"jump|up|versions?|latest|stable|language|english)\b",
    re.IGNORECASE,
)
_COPYRIGHT = re.compile(r"^\s*(?:©|\(c\)|copyright\b)", re.IGNORECASE)


def is_chrome(text: str) -> bool:
    """Only navigation words, separators and numbers ("index | modules | next | previous",
    "Show Source", "Edit this page"), or a short copyright line."""
    if _COPYRIGHT.match(text) and len(text) < 300:
        return True
    rest = _CHROME_WORDS.sub(" ", text)
    return not re.search(r"[^\W\d_]{2,}", rest)


def caps_share(title: str) -> float:
    letters = [c for c in title if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


# --------------------------------------------------------------------------------------------
# Segmentation and filters
# --------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s+")


def split_text(text: str, max_chars: int, min_chars: int = 0) -> list[str]:
    """Cut prose longer than max_chars at the last sentence end that leaves a piece over
    min_chars, else at the last space; never inside a word. A single word longer than
    max_chars stays whole (the length filter then drops it)."""
    pieces = []
    while len(text) > max_chars:
        window = text[:max_chars + 1]
        cuts = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() - 1 > min_chars]
        cut = cuts[-1] if cuts else window.rfind(" ") + 1
        if cut <= 0:
            space = text.find(" ", max_chars)
            if space < 0:
                break
            cut = space + 1
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return [p for p in pieces if p]


def split_lines(text: str, max_chars: int) -> list[str]:
    """Cut line-kept text (code, lists) longer than max_chars between lines."""
    pieces, cur = [], ""
    for line in text.split("\n"):
        for part in (split_text(line, max_chars) if len(line) > max_chars else [line]):
            if cur and len(cur) + 1 + len(part) > max_chars:
                pieces.append(cur.rstrip("\n"))
                cur = ""
            cur = f"{cur}\n{part}" if cur else part
    if cur.strip():
        pieces.append(cur.rstrip("\n"))
    return [p.strip("\n") for p in pieces if p.strip()]


@dataclass
class _Candidate:
    text: str
    heading: str | None
    line: int


def pack(blocks: list[Block], options: CorpusOptions) -> list[_Candidate]:
    """Sections → candidate passages: a heading starts a new one; paragraphs are packed up to
    max_chars; a chrome paragraph stands alone so the filter can drop it without its neighbours."""
    out: list[_Candidate] = []
    heading: str | None = None
    cur, cur_line = "", 0

    def flush() -> None:
        nonlocal cur
        if cur:
            out.append(_Candidate(cur, heading, cur_line))
            cur = ""

    for block in blocks:
        if block.kind == "heading":
            flush()
            heading = block.text
            continue
        if block.kind == "text" and is_chrome(block.text):
            flush()
            out.append(_Candidate(block.text, heading, block.line))
            continue
        if block.kind == "lines":
            pieces = split_lines(block.text, options.max_chars)
        else:
            pieces = split_text(block.text, options.max_chars, options.min_chars)
        for piece in pieces:
            if cur and len(cur) + 2 + len(piece) > options.max_chars:
                flush()
            if not cur:
                cur_line = block.line
            cur = f"{cur}\n\n{piece}" if cur else piece
    flush()
    return out


def drop_reason(text: str, heading: str | None, options: CorpusOptions, seen: set[str]) -> str | None:
    """The first filter a passage fails, or None. A kept passage's key is added to `seen`."""
    if is_chrome(text):
        return CHROME
    if len(text) < options.min_chars:
        return TOO_SHORT
    if len(text) > options.max_chars:
        return TOO_LONG
    if heading and sum(c.isalpha() for c in heading) >= options.title_caps_min_letters \
            and caps_share(heading) > options.max_title_caps:
        return HEADING_CAPS
    key = normalise_for_dedup(text)
    if key in seen:
        return DUPLICATE
    seen.add(key)
    return None


def segment_document(text: str, suffix: str, options: CorpusOptions | None = None, title: str | None = None,
                     seen: set[str] | None = None) -> tuple[list[Passage], list[Drop]]:
    """One file's text → (kept passages, dropped passages with their reasons).

    `title` names passages before the first heading (the file's name, say). `seen` holds the
    normalised texts already kept (pass one set across files to deduplicate across them); it is
    updated with this file's kept passages."""
    options = options or CorpusOptions()
    seen = set() if seen is None else seen
    kept: list[Passage] = []
    dropped: list[Drop] = []
    for segment, cand in enumerate(pack(extract_blocks(text, suffix), options)):
        name = cand.heading or title
        reason = drop_reason(cand.text, cand.heading, options, seen)
        if reason is None:
            kept.append(Passage(cand.text, name, cand.line, segment))
        else:
            dropped.append(Drop(cand.text, name, cand.line, segment, reason))
    return kept, dropped
