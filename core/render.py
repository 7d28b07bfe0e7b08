"""Untrusted model and web text as safe, readable HTML (DESIGN.md §9).

`markdown_html(text)` parses the text as CommonMark (plus tables and strikethrough) with
markdown-it-py and then passes the HTML through nh3, a sanitizer built on Rust's ammonia:

- Raw HTML in the text is never HTML: markdown-it runs with `html` off, so `<script>` shows as the
  characters "<script>".
- Images become their alt text and links become their link text, so nothing the text names is ever
  fetched or clickable: a page showing a sample makes no request and cannot be turned into a
  phishing link. The raw toggle on the page shows the exact text, URLs included.
- Code is highlighted by Pygments with CSS classes (never inline styles); the classes are styled by
  `STYLE`, which a page adds once.
- Headings are shifted down two levels so a model's "# Title" does not dwarf the page.
- nh3 then keeps only an explicit list of tags and the `class` attribute (and `start` on ordered
  lists), with no URL scheme allowed at all: even a bug in the renderer above cannot emit a
  `href`, `src`, event handler or style.

No streamlit here: ui.show_text is the one place that puts the result on a page.
"""

from __future__ import annotations

import html
import re

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

WRAPPER_CLASS = "winnow-md"
HEADING_SHIFT = 2  # "# x" renders as <h3>, "## x" as <h4>, ...; h6 is the floor
ALIGN_CLASSES = {"left": "md-left", "center": "md-center", "right": "md-right"}
PYGMENTS_STYLE = "default"

# What nh3 lets through. Everything the renderer below can emit, nothing more: no <a>, no <img>,
# no h1/h2 (headings are shifted), no attribute that carries a URL, a script or a style.
ALLOWED_TAGS = {
    "div", "p", "br", "hr", "span", "strong", "em", "s", "code", "pre", "blockquote",
    "h3", "h4", "h5", "h6", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td",
}
ALLOWED_ATTRIBUTES = {
    "div": {"class"}, "span": {"class"}, "pre": {"class"}, "code": {"class"}, "th": {"class"}, "td": {"class"},
    "ol": {"start"},  # a list that starts at 3 keeps its numbers
}

_formatter = HtmlFormatter(nowrap=True)  # bare <span class="k">…</span>: the <pre> is ours


def _highlight(code: str, lang: str) -> str:
    """Highlighted code as HTML spans, or the code HTML-escaped when the language is unknown."""
    if lang:
        try:
            lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
        except ClassNotFound:
            lexer = None
        if lexer is not None:
            return highlight(code, lexer, _formatter)
    return html.escape(code, quote=False)


def _code_block(code: str, lang: str = "") -> str:
    # Our own <pre>: markdown-it would otherwise put the text's language name into a class.
    return f'<pre class="md-code highlight"><code>{_highlight(code, lang)}</code></pre>\n'


def _render_fence(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    lang = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    return _code_block(token.content, lang)


def _render_code_block(self, tokens, idx, options, env) -> str:
    return _code_block(tokens[idx].content)


def _render_image(self, tokens, idx, options, env) -> str:
    # The alt text only: an <img> would make the browser fetch whatever URL the text names.
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    return f'<span class="md-image">{html.escape(alt, quote=False)}</span>' if alt else ""


def _render_link_open(self, tokens, idx, options, env) -> str:
    return '<span class="md-link">'  # the link text stays, the target goes (autolinks too)


def _render_link_close(self, tokens, idx, options, env) -> str:
    return "</span>"


def _shift_headings_and_alignment(state) -> None:
    """A core rule run after parsing: heading levels down, table alignment from style to class."""
    for token in state.tokens:
        if token.type in ("heading_open", "heading_close"):
            level = min(int(token.tag[1]) + HEADING_SHIFT, 6)
            token.tag = f"h{level}"
        elif token.type in ("th_open", "td_open") and token.attrs.get("style"):
            match = re.fullmatch(r"text-align:(left|center|right)", str(token.attrs.pop("style")))
            if match:
                token.attrs["class"] = ALIGN_CLASSES[match.group(1)]


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.core.ruler.push("winnow_safe_tokens", _shift_headings_and_alignment)
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_code_block)
    md.add_render_rule("image", _render_image)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("link_close", _render_link_close)
    return md


_md = _parser()


def sanitize(fragment: str) -> str:
    """An HTML fragment with only the allowed tags and attributes left (nh3: no URL, no comment)."""
    return nh3.clean(fragment, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                     clean_content_tags={"script", "style"}, url_schemes=set(), strip_comments=True,
                     link_rel=None, generic_attribute_prefixes=set())


def markdown_html(text: str | None) -> str:
    """Untrusted text as sanitized HTML inside <div class="winnow-md"> (empty text: an empty div)."""
    body = _md.render(str(text or ""))
    return sanitize(f'<div class="{WRAPPER_CLASS}">{body}</div>')


def visible_text(fragment: str) -> str:
    """The text a browser shows for an HTML fragment from markdown_html: tags dropped, entities
    decoded. For tests and plain-text previews, never for putting HTML on a page."""
    return html.unescape(re.sub(r"<[^>]*>", "", fragment))


def _stylesheet() -> str:
    scope = f".{WRAPPER_CLASS}"
    # Token colours only, each rule scoped: get_style_defs() would also restyle every <pre> on the page.
    pygments = "\n".join(HtmlFormatter(style=PYGMENTS_STYLE).get_token_style_defs(f"{scope} .highlight"))
    return f"""
{scope} {{ line-height: 1.5; overflow-wrap: anywhere; }}
{scope} p, {scope} ul, {scope} ol, {scope} blockquote, {scope} table, {scope} pre {{ margin: 0 0 0.6em 0; }}
{scope} h3, {scope} h4, {scope} h5, {scope} h6 {{ margin: 0.6em 0 0.3em 0; padding: 0; font-weight: 600;
  line-height: 1.3; }}
{scope} h3 {{ font-size: 1.15em; }}
{scope} h4 {{ font-size: 1.05em; }}
{scope} h5, {scope} h6 {{ font-size: 1em; }}
{scope} blockquote {{ border-left: 3px solid rgba(128, 128, 128, 0.5); padding-left: 0.8em; opacity: 0.9; }}
{scope} table {{ border-collapse: collapse; display: block; overflow-x: auto; }}
{scope} th, {scope} td {{ border: 1px solid rgba(128, 128, 128, 0.45); padding: 0.2em 0.5em; }}
{scope} .md-left {{ text-align: left; }}
{scope} .md-center {{ text-align: center; }}
{scope} .md-right {{ text-align: right; }}
{scope} code {{ font-size: 0.9em; }}
{scope} pre.md-code {{ background: #f6f8fa; color: #1f2328; border-radius: 0.4em; padding: 0.6em 0.8em;
  white-space: pre-wrap; overflow-wrap: anywhere; }}
{scope} .md-link {{ text-decoration: underline dotted; }}
{scope} .md-image {{ font-style: italic; opacity: 0.8; }}
{scope} .md-image::before {{ content: "[image: "; }}
{scope} .md-image::after {{ content: "]"; }}
{pygments}
"""


STYLE: str = _stylesheet()
