"""Safe markdown rendering of untrusted text (core.render) and ui.show_text on a real page.

Every test checks the literal HTML that would reach the browser: what markdown becomes, and that
no payload in the text can become a tag, an attribute, a URL or a script."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

from core import render
from core.render import markdown_html, visible_text

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<iframe src="http://evil/frame"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    "<style>body { display: none }</style>",
    "<svg onload=alert(1)><circle r=5></svg>",
    "![tracking pixel](http://evil/x.png)",
    "[phish](javascript:alert(1)) [site](http://evil/page) <http://evil/auto> <mailto:a@evil>",
    '<div onclick="alert(1)">hi</div> <!-- hidden --> <b>bold</b>',
    "```html\n<script>alert(2)</script>\n```",
    '[ref]\n\n[ref]: http://evil/ref "title"',
]
COMBINED = "\n\n".join(PAYLOADS)


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would parse the fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_comment(self, data) -> None:
        self.comments.append(data)


def tags_of(fragment: str) -> _Tags:
    parser = _Tags()
    parser.feed(fragment)
    parser.close()
    return parser


def markup_only(fragment: str) -> str:
    """The tags of a fragment without its text: every literal '<' in the output starts a real tag,
    since text '<' is always escaped as &lt;."""
    return " ".join(re.findall(r"<[^>]*>", fragment))


# --------------------------------------------------------------------------------------------
# Markdown becomes readable HTML
# --------------------------------------------------------------------------------------------


def test_wrapped_in_one_div_and_empty_text():
    assert markdown_html("") == '<div class="winnow-md"></div>'
    assert markdown_html(None) == '<div class="winnow-md"></div>'
    assert markdown_html("hello") == '<div class="winnow-md"><p>hello</p>\n</div>'


def test_headings_are_shifted_down_two_levels():
    out = markdown_html("# Title\n\n## Part\n\n### Sub\n\n###### Deep\n\nSetext\n======")
    assert "<h3>Title</h3>" in out and "<h4>Part</h4>" in out and "<h5>Sub</h5>" in out
    assert "<h6>Deep</h6>" in out and "<h3>Setext</h3>" in out
    assert "<h1" not in out and "<h2" not in out


def test_lists_emphasis_strikethrough_and_quotes():
    out = markdown_html("- one\n- **two**\n\n3. three\n4. *four*\n\n~~gone~~ `x < y`\n\n> quoted")
    assert "<ul>\n<li>one</li>\n<li><strong>two</strong></li>\n</ul>" in out
    assert '<ol start="3">\n<li>three</li>\n<li><em>four</em></li>\n</ol>' in out
    assert "<s>gone</s>" in out and "<code>x &lt; y</code>" in out
    assert "<blockquote>\n<p>quoted</p>\n</blockquote>" in out


def test_tables_keep_alignment_as_classes():
    out = markdown_html("| name | n |\n|:-----|--:|\n| a | 1 |\n| b | 22 |")
    assert "<table>" in out and "<thead>" in out and "<tbody>" in out
    assert '<th class="md-left">name</th>' in out and '<th class="md-right">n</th>' in out
    assert '<td class="md-right">22</td>' in out
    assert "style" not in out


def test_fenced_code_is_highlighted_with_classes_and_text_preserved():
    code = "def greet(name):\n    return f'<hi> {name}' & 1\n"
    out = markdown_html(f"```python\n{code}```")
    assert out.count('<pre class="md-code highlight"><code>') == 1
    assert '<span class="k">def</span>' in out and '<span class="nf">greet</span>' in out
    assert "style=" not in out
    # The code's text is all there, character for character, once the spans are dropped.
    assert visible_text(out).strip() == code.strip()
    assert "&lt;hi&gt;" in out and "&amp;" in out


def test_unknown_language_and_indented_code_are_plain_escaped_code():
    out = markdown_html("```no-such-language\n<b>x</b>\n```\n\n    indented <i>y</i>")
    assert '<pre class="md-code highlight"><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>' in out
    assert '<pre class="md-code highlight"><code>indented &lt;i&gt;y&lt;/i&gt;\n</code></pre>' in out
    assert "language-" not in out  # the text's language name never becomes a class


def test_html_entities_and_special_characters():
    out = markdown_html("AT&T &amp; &copy; &lt;tag&gt; 3 < 4 > 2 \"q\" 'a'")
    assert "AT&amp;T &amp; © &lt;tag&gt; 3 &lt; 4 &gt; 2" in out
    assert visible_text(out).strip() == "AT&T & © <tag> 3 < 4 > 2 \"q\" 'a'"


def test_very_long_text_renders_whole():
    paragraph = "word " * 2000
    text = "\n\n".join([paragraph] * 50)  # about 500 kB
    out = markdown_html(text)
    assert out.count("<p>") == 50
    assert visible_text(out).count("word") == 100_000


# --------------------------------------------------------------------------------------------
# Nothing in the text becomes active
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS[:6] + [PAYLOADS[8]])
def test_raw_html_shows_as_text(payload):
    out = markdown_html(payload)
    # The payload's characters are on the page, as text...
    assert visible_text(out).strip().replace("\n", " ") == payload.replace("\n", " ")
    # ... and none of its tags is a tag.
    assert [tag for tag, _ in tags_of(out).tags] == ["div", "p"]


def test_images_become_their_alt_text():
    out = markdown_html("before ![a *chart* of <sales>](http://evil/x.png \"t\") after")
    assert '<span class="md-image">a chart of &lt;sales&gt;</span>' in out
    assert "<img" not in out and "evil" not in out
    assert markdown_html("![](http://evil/x.png)") == '<div class="winnow-md"><p></p>\n</div>'


def test_links_and_autolinks_are_inert():
    out = markdown_html("[site](http://x) and <http://x/auto> and [ref][r]\n\n[r]: http://x/ref")
    assert '<span class="md-link">site</span>' in out
    assert '<span class="md-link">http://x/auto</span>' in out  # an autolink's text is its URL
    assert '<span class="md-link">ref</span>' in out
    assert "href" not in out and "<a" not in out and "http://x/ref" not in out
    # markdown-it refuses javascript: as a link target, so that one stays literal text.
    js = markdown_html("[t](javascript:alert(1))")
    assert "href" not in js and "[t](javascript:alert(1))" in visible_text(js)


def test_combined_payload_has_no_active_markup():
    out = markdown_html(COMBINED)
    markup = markup_only(out)
    assert "<script" not in out.lower() and "<iframe" not in out.lower() and "<svg" not in out.lower()
    assert not re.search(r"\son\w+\s*=", markup)
    assert "href" not in markup and "src" not in markup and "style" not in markup
    parsed = tags_of(out)
    assert not parsed.comments
    assert {tag for tag, _ in parsed.tags} <= render.ALLOWED_TAGS
    for tag, attrs in parsed.tags:
        assert set(attrs) <= {"class", "start"}, (tag, attrs)
    # No URL of the payloads appears in any attribute, nor as a link or image target.
    assert "evil" not in " ".join(v or "" for _, attrs in parsed.tags for v in attrs.values())


def test_sanitizer_strips_what_the_renderer_must_never_emit():
    # Defence in depth: even HTML that did not come from the renderer loses every active part.
    dirty = ('<a href="http://x">l</a><img src="http://x/i.png" alt="i"><h1 onclick="x()">t</h1>'
             '<span class="k" style="color:red" data-x="1">s</span><script>bad()</script><!-- c -->')
    assert render.sanitize(dirty) == 'lt<span class="k">s</span>'


def test_stylesheet_is_scoped_to_the_wrapper():
    rules = [line for line in render.STYLE.splitlines() if line and not line.startswith(" ")]
    assert rules and all(line.startswith(".winnow-md") for line in rules)
    assert ".winnow-md .highlight .k {" in render.STYLE  # pygments token classes
    assert "white-space: pre-wrap" in render.STYLE and "border: 1px solid" in render.STYLE


# --------------------------------------------------------------------------------------------
# ui.show_text on a page
# --------------------------------------------------------------------------------------------

SCRIPT = """
import ui
ui.raw_toggle()
ui.show_text(PAYLOAD, "Response", height=200, key="t_resp")
ui.show_text("second **text**")
ui.show_text("", "Empty")
ui.show_text("log line <b>1</b>", markdown=False)
"""
PAGE_PAYLOAD = "# Answer\n\n```python\nprint('hi')\n```\n\n<script>alert(1)</script> ![x](http://evil/x.png) [l](http://evil)"


def _app(monkeypatch) -> AppTest:
    monkeypatch.syspath_prepend(str(REPO))
    at = AppTest.from_string(SCRIPT.replace("PAYLOAD", repr(PAGE_PAYLOAD)), default_timeout=30)
    return at.run()


def _markdown_elements(at: AppTest) -> list[str]:
    return [h.value for h in at.html if '<div class="winnow-md">' in h.value]


def _stylesheets(at: AppTest) -> int:
    """How many times the page got core.render.STYLE (a style-only st.html: the event container)."""
    return sum(h.value == f"<style>{render.STYLE}</style>" for h in at.html)


def test_show_text_renders_sanitized_markdown_on_the_page(monkeypatch):
    at = _app(monkeypatch)
    assert not at.exception, at.exception
    shown = _markdown_elements(at)
    assert len(shown) == 2
    first, second = shown
    assert first == markdown_html(PAGE_PAYLOAD)
    assert second == '<div class="winnow-md"><p>second <strong>text</strong></p>\n</div>'
    assert _stylesheets(at) == 1  # added once for the two texts
    body = first
    assert "<h3>Answer</h3>" in body and '<span class="nb">print</span>' in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "href" not in body and "src" not in body and "evil" not in body
    # The label and "(empty)" are plain text; the log stays literal.
    assert [t.value for t in at.text] == ["Response", "Empty", "(empty)"]
    assert [c.value for c in at.code] == ["log line <b>1</b>"]
    # A rerun adds the style again (a new run starts a new page), still only once.
    at.run()
    assert _stylesheets(at) == 1 and len(_markdown_elements(at)) == 2


def test_raw_toggles_show_the_exact_text(monkeypatch):
    at = _app(monkeypatch)
    at.toggle(key="t_resp_raw").set_value(True).run()
    assert not at.exception, at.exception
    assert PAGE_PAYLOAD in [c.value for c in at.code]  # this text raw, the other still markdown
    assert len(_markdown_elements(at)) == 1
    at.toggle(key="t_resp_raw").set_value(False).run()
    assert len(_markdown_elements(at)) == 2

    at.toggle(key="raw_text_toggle").set_value(True).run()  # the sidebar toggle: every text raw
    assert at.session_state["raw_text"] is True
    assert not _markdown_elements(at)
    assert [c.value for c in at.code] == [PAGE_PAYLOAD, "second **text**", "log line <b>1</b>"]
    assert at.toggle(key="t_resp_raw").disabled  # nothing to switch while everything is raw


def test_raw_text_key_set_by_a_test_or_page_is_honoured(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    at = AppTest.from_string("import ui\nui.show_text('**b**', 'x')", default_timeout=30)
    at.session_state["raw_text"] = True
    at.run()
    assert [c.value for c in at.code] == ["**b**"] and not at.html
