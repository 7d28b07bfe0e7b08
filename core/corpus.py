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
import textwrap
from dataclasses import dataclass

# The drops table is migration 0014_corpus_drops (core/migrations.py). Ids are content hashes of
# (dataset, file, segment, reason, text), so importing the same file again records nothing twice.

HTML_SUFFIXES = (".html", ".htm")
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
class Block:
    kind: str  # "heading" | "text" (prose, one line) | "lines" (code, lists, tables: lines kept)
    text: str
    line: int  # 1-based line of the source file where the block starts (best effort for HTML)


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
# Extraction: HTML
# --------------------------------------------------------------------------------------------

# Permalink anchors that Sphinx, MkDocs and rustdoc put in headings; trafilatura keeps their
# text, so a heading would read "Tides¶".
_PERMALINK_TEXT = {"", "¶", "§", "#", "🔗"}
_TRAILING_MARKS = re.compile(r"[\s¶§#🔗]+$")


def _strip_permalinks(html: str):
    import lxml.html

    try:
        tree = lxml.html.document_fromstring(html)
    except Exception:  # lxml refuses some inputs (empty, only a comment): nothing to extract
        return None
    for anchor in tree.iter("a"):
        classes = (anchor.get("class") or "").split()
        text = (anchor.text_content() or "").strip()
        if "headerlink" in classes or (anchor.get("href", "").startswith("#") and text in _PERMALINK_TEXT
                                       and len(anchor) == 0):
            anchor.drop_tree()  # keeps the anchor's tail text
    return tree


def _inline_text(element) -> str:
    return " ".join("".join(element.itertext()).split())


def _locate(raw: str, text: str, start: int) -> int:
    """Where a block's first words appear in the raw HTML (tags and spacing between words
    allowed), searching on from `start`; -1 when not found."""
    words = re.findall(r"\w+", text)[:4]
    if not words:
        return -1
    pattern = r"(?:[^\w<]|<[^>]*>)+".join(map(re.escape, words))
    found = re.compile(pattern).search(raw, start)
    return found.start() if found else -1


def html_blocks(html: str) -> list[Block]:
    """Main content of an HTML page as blocks, via trafilatura's XML output."""
    import trafilatura
    from lxml import etree

    tree = _strip_permalinks(html)
    if tree is None:
        return []
    xml = trafilatura.extract(tree, output_format="xml", include_formatting=True, include_tables=True,
                              include_comments=False, include_images=False, include_links=False)
    if not xml:
        return []
    main = etree.fromstring(xml.encode("utf-8")).find("main")
    if main is None:
        return []
    blocks: list[Block] = []
    pos, line = 0, 1
    for el in main:
        kind, text = _xml_block(el)
        if not text.strip():
            continue
        found = _locate(html, text, pos)
        if found >= 0:
            line = html.count("\n", 0, found) + 1
            pos = found
        blocks.append(Block(kind, text, line))
    return blocks


def _xml_block(el) -> tuple[str, str]:
    tag = el.tag
    if tag == "head":
        return "heading", _TRAILING_MARKS.sub("", _inline_text(el))
    if tag == "code":
        return "lines", textwrap.dedent("".join(el.itertext())).strip("\n").rstrip()
    if tag == "list":
        items = [_inline_text(item) for item in el.iter("item")]
        return "lines", "\n".join(f"- {item}" for item in items if item)
    if tag == "table":
        rows = [" | ".join(_inline_text(cell) for cell in row.iter("cell")) for row in el.iter("row")]
        return "lines", "\n".join(r for r in rows if r.strip(" |"))
    return "text", _inline_text(el)


# --------------------------------------------------------------------------------------------
# Extraction: markdown, reStructuredText, plain text (line-based, so lines are exact)
# --------------------------------------------------------------------------------------------

_SEPARATOR = re.compile(r"^\s*([=\-~^*#`:.+_\"'<>])\1{2,}\s*$")  # ----, ====, ***: rules and underlines
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_MD_FENCE = re.compile(r"^\s*(```+|~~~+)")
_MD_ATX = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`__?")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_REF = re.compile(r"`([^`]+)`_{1,2}")
RST_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "literalinclude", "doctest", "testcode"}
# Directives whose body is not prose: tables of contents, images, index entries, raw markup.
RST_SKIP_DIRECTIVES = {"toctree", "image", "figure", "index", "contents", "meta", "raw", "include",
                       "autosummary", "automodule", "autoclass", "autofunction", "highlight", "only"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _prose(lines: list[str], inline=None) -> str:
    """A paragraph's lines as text: soft-wrapped lines joined with a space; a list item starts
    a new line, so a list keeps its shape."""
    out: list[str] = []
    for raw in lines:
        line = " ".join(raw.split())  # prose: runs of spaces mean nothing
        if inline:
            line = inline(line)
        if not line:
            continue
        if out and not _LIST_ITEM.match(raw):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return "\n".join(out)


class _Lines:
    """Collects blocks from a line-based format; each paragraph remembers its first line."""

    def __init__(self, inline=None, looks_like_code=None) -> None:
        self.blocks: list[Block] = []
        self.buf: list[str] = []
        self.start = 0
        self.inline = inline
        self.looks_like_code = looks_like_code

    def add(self, number: int, line: str) -> None:
        if not self.buf:
            self.start = number
        self.buf.append(line)

    def flush(self) -> None:
        if self.buf and self.looks_like_code and self.looks_like_code(self.buf):
            self.blocks.append(Block("lines", _code(self.buf), self.start))
            self.buf = []
        if self.buf:
            text = _prose(self.buf, self.inline)
            if text:
                self.blocks.append(Block("text", text, self.start))
            self.buf = []

    def block(self, kind: str, text: str, line: int) -> None:
        self.flush()
        if text.strip():
            self.blocks.append(Block(kind, text, line))


def _take_indented(lines: list[str], i: int, base: int) -> tuple[list[str], int]:
    """Lines from i that are blank or indented more than `base`; returns them and the next index."""
    body: list[str] = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
        i -= 1
    return body, i


def _code(body: list[str]) -> str:
    return textwrap.dedent("\n".join(body)).strip("\n")


def markdown_blocks(text: str) -> list[Block]:
    def inline(s: str) -> str:
        return _HTML_TAG.sub("", _MD_LINK.sub(r"\1", _MD_IMAGE.sub("", s)))

    lines = text.split("\n")
    out = _Lines(inline)
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        fence = _MD_FENCE.match(line)
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence.group(1)):
                j += 1
            out.block("lines", _code(lines[i + 1:j]), number + 1)
            i = j + 1
            continue
        atx = _MD_ATX.match(line)
        if atx:
            out.block("heading", inline(atx.group(1)), number)
        elif out.buf and re.match(r"^\s*(=+|-+)\s*$", line):  # setext: the paragraph above is a heading
            heading, start = _prose(out.buf, inline), out.start
            out.buf = []
            out.block("heading", heading, start)
        elif _SEPARATOR.match(line) or not line.strip():
            out.flush()
        elif not out.buf and _indent(line) >= 4:  # an indented code block after a blank line
            body, i = _take_indented(lines, i, 3)
            out.block("lines", _code(body), number)
            continue
        else:
            out.add(number, line)
        i += 1
    out.flush()
    return out.blocks


def rst_blocks(text: str) -> list[Block]:
    def inline(s: str) -> str:
        s = _RST_ROLE.sub(r"\1", s)
        s = _RST_LINK.sub(r"\1", s)
        s = _RST_LITERAL.sub(r"\1", s)
        return _RST_REF.sub(r"\1", s)

    lines = text.split("\n")
    out = _Lines(inline)
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not _SEPARATOR.match(line) and _SEPARATOR.match(nxt) \
                and len(nxt.strip()) >= len(line.strip()) and not out.buf:
            out.block("heading", inline(line.strip()), number)  # title over its underline
            i += 2
            continue
        directive = _RST_DIRECTIVE.match(line.strip()) if _indent(line) == 0 else None
        if directive or (_indent(line) == 0 and line.startswith("..")):
            name = directive.group(1) if directive else ""
            body, j = _take_indented(lines, i + 1, 0)
            if name in RST_CODE_DIRECTIVES:
                code = [b for b in body if not re.match(r"^\s+:[\w-]+:", b)]  # options are not code
                out.block("lines", _code(code), number + 1)
                i = j
            elif directive and name not in RST_SKIP_DIRECTIVES:
                out.flush()  # an admonition: its body is prose, read on below
                i += 1
                if directive.group(2):
                    out.add(number, directive.group(2))
            else:
                out.flush()  # a comment, a link target or a non-prose directive
                i = j
            continue
        if line.strip().startswith(">>>") and not out.buf:
            body, i = _doctest(lines, i)
            out.block("lines", _code(body), number)
            continue
        if _SEPARATOR.match(line) or not line.strip():
            out.flush()
        else:
            out.add(number, line)
            if line.rstrip().endswith("::") and (not nxt.strip()):
                # "text::" introduces an indented literal block: keep "text:" and the code's lines.
                out.buf[-1] = line.rstrip()[:-1] if line.strip() != "::" else ""
                out.flush()
                j = i + 1
                while j < len(lines) and not lines[j].strip():
                    j += 1
                if j < len(lines) and _indent(lines[j]) > _indent(line):
                    body, j = _take_indented(lines, j, _indent(line))
                    out.block("lines", _code(body), j - len(body) + 1)
                    i = j
                    continue
        i += 1
    out.flush()
    return out.blocks


def _doctest(lines: list[str], i: int) -> tuple[list[str], int]:
    """An interactive session: '>>>' lines and their output, up to a blank line."""
    body = []
    while i < len(lines) and lines[i].strip():
        body.append(lines[i])
        i += 1
    return body, i


_ALIGNED_COMMENT = re.compile(r"\S\s{2,}#")


def _aligned_comments(lines: list[str]) -> bool:
    """Unindented code in plain text (a docstring's usage example) gives itself away by comments
    aligned in a column; wrapped prose never does."""
    return sum(bool(_ALIGNED_COMMENT.search(line)) for line in lines) >= 2


def text_blocks(text: str) -> list[Block]:
    """Plain text: paragraphs between blank lines; rules (----, ====) are dropped; an indented
    paragraph or an interactive session ('>>>') is code and keeps its lines."""
    lines = text.split("\n")
    out = _Lines(looks_like_code=_aligned_comments)
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        if not out.buf and line.strip() and (line.lstrip().startswith(">>>") or _indent(line) >= 4):
            body = []
            while i < len(lines) and lines[i].strip():
                body.append(lines[i])
                i += 1
            out.block("lines", _code(body), number)
            continue
        if _SEPARATOR.match(line) or not line.strip():
            out.flush()
        else:
            out.add(number, line)
        i += 1
    out.flush()
    return out.blocks


def extract_blocks(text: str, suffix: str) -> list[Block]:
    """A file's main content as blocks, by its suffix (.html/.htm, .md, .rst, anything else is text)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    suffix = suffix.lower()
    if suffix in HTML_SUFFIXES:
        return html_blocks(text)
    lines = "\n".join(line.rstrip() for line in text.split("\n"))
    if suffix == ".md":
        return markdown_blocks(lines)
    if suffix == ".rst":
        return rst_blocks(lines)
    return text_blocks(lines)


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
