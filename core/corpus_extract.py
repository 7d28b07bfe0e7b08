"""Corpus extraction (core.corpus's first step): every format becomes the same list of `Block`s.

HTML goes through trafilatura (the main-content extractor FineWeb uses), which drops navigation
bars, sidebars and footers, after the headings' permalink anchors are stripped; markdown,
reStructuredText and plain text go through a light parser of their own. A block is a heading, a
prose paragraph, or a line-kept block (code, lists, tables) whose line breaks matter.
core.corpus segments and filters the blocks; its public names include these.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

HTML_SUFFIXES = (".html", ".htm")


@dataclass(frozen=True)
class Block:
    kind: str  # "heading" | "text" (prose, one line) | "lines" (code, lists, tables: lines kept)
    text: str
    line: int  # 1-based line of the source file where the block starts (best effort for HTML)


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
