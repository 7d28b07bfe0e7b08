"""Hostile text is inert on every page, in a real browser (issue 15, item 3a).

One workspace is seeded, through the app's own write paths (import, jobs run on python backends,
the judge's and the store's writers), with the same hostile payload in every field a user or a
model can fill: instructions, inputs, system prompts, responses, judge rationales and raw verdicts,
listwise rankings (valid and invalid), preference pairs, revisions, backtranslated instructions,
category names, descriptions and criteria, corpus document titles and text, review notes, import
rejects, reviewer names, a reviewer's edit, model ids and chat templates, a pasted recipe. Names the app validates (datasets,
models, snapshots, ranking sets) must refuse the payload: the test asserts the refusal.

Then one `streamlit run` and one chromium visit every page of app.py's navigation in turn (and
open the expanders and tabs that show sample text), and on each check that:
- the browser sent no request to any host but the local server (the payload's beacons are on
  198.51.100.7, a TEST-NET-2 address);
- `window.__xss` is undefined and no dialog opened (`javascript:alert(1)`);
- the DOM holds no script, event handler, `javascript:` URL or external `src` made from a payload;
- no page shows an uncaught exception;
- the payload's characters are visible as text where the page shows the field.

Needs /usr/bin/chromium, like tests/test_browser.py (whose server and wait helpers it reuses).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MODULE = {"modules": ["tests.test_browser_xss"]}  # the python backends below, for the jobs

# --------------------------------------------------------------------------------------------
# The payloads
# --------------------------------------------------------------------------------------------

BEACON_HOST = "198.51.100.7"  # TEST-NET-2: never a real host; a request to it is a leak
PAYLOADS = (
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<a href="javascript:window.__xss=1">click</a>',
    f"![b](http://{BEACON_HOST}/beacon.png)",
    f'<img src="http://{BEACON_HOST}/b.png">',
    "<svg onload=window.__xss=1>",
    "[x](javascript:alert(1))",
    f'<b>bold</b> <iframe src="http://{BEACON_HOST}/frame"></iframe> <details open><summary>s</summary>d</details>',
    "{{7*7}}",
    "$\\href{javascript:alert(1)}{x}$",
)
MARK = PAYLOADS[0]  # what must show as characters wherever a page shows the field
HOSTILE = "XSS-PROBE\n\n" + "\n\n".join(PAYLOADS)
SHORT = PAYLOADS[1]  # for names the app validates: must be refused
# For short free-text names (a category's: at most 60 characters; a reviewer's): markdown, which
# Streamlit's own labels and captions would render (an image fetched, a link made), not HTML.
MD_SHORT = f"![b](http://{BEACON_HOST}/n.png)[x](javascript:alert(1))"
FILE_NAME = "[x](javascript:alert(1)) <svg onload=window.__xss=1>"  # a document's title (no "/")
ONE_LINE = " ".join(p for p in PAYLOADS if len(p) < 50)  # for one-line fields of at most 400 characters


def hostile(label: str, start: int = 0) -> str:
    """The payload with a label in front, so each stored text is distinct and findable; `start`
    rotates the payloads so that a different one comes first (a clipped label, a title or an
    option shows the first characters only)."""
    return f"{label} XSS-PROBE\n\n" + "\n\n".join(PAYLOADS[start:] + PAYLOADS[:start])


# --------------------------------------------------------------------------------------------
# Python backends (core/llm/python_backend.py) that write hostile text
# --------------------------------------------------------------------------------------------


def hostile_answer(conversation: list[dict], rng) -> str:
    """A generator whose n samples differ (a listwise judge needs distinct answers to rank)."""
    return hostile(f"answer-{rng.randint(0, 10**6)}")


_SHOWN = re.compile(r"\[Answer (\d+)\]")


def hostile_ranker(conversation: list[dict]) -> str:
    """A listwise judge: a hostile rationale and, for every other list, a valid ranking line;
    the rest are invalid verdicts whose raw text the Rankings page shows."""
    prompt = next(m["content"] for m in reversed(conversation) if m["role"] == "user")
    shown = sorted({int(j) for j in _SHOWN.findall(prompt)})
    if "Q2" in prompt:
        return hostile("invalid-ranking")
    return hostile("ranking-rationale") + "\nRanking: " + " > ".join(map(str, shown))


def hostile_reviser(conversation: list[dict]) -> str:
    return hostile("revision")


def hostile_backward(conversation: list[dict]) -> str:
    # Words the passage lacks, or the candidate is dropped as a copy of the document.
    # (the stage keeps the first sentence only: the payload comes before the question mark)
    return ("Instruction: BT-PROBE <script>window.__xss=2</script> <img src=y onerror=\"window.__xss=2\"> "
            f"![c](http://{BEACON_HOST}/bt.png) [go](javascript:alert(2)) which tyre pressure suits wet roads?")


def hostile_curator(instruction: str, response: str, scale=(1, 5)) -> float:
    return 4.0


hostile_curator.winnow_role = "judge"


# --------------------------------------------------------------------------------------------
# The hostile workspace
# --------------------------------------------------------------------------------------------

SCHEME = "hostile-scheme"
WRITER, RANKER, REVISER, BACKWARD, CURATOR = (
    "hostile-writer", "hostile-ranker", "hostile-reviser", "hostile-backward", "hostile-curator")
JUDGE, ASPECT_JUDGE = "hostile-judge", "hostile-aspects"
ASPECT_LABELS = ("Helpfulness", "Honesty", "Instruction following", "Truthfulness")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_and_ingest(ws, job_id: str) -> None:
    """Run a job in this process (python backends: no model to load) and ingest what it wrote."""
    from core import jobs

    assert jobs.run(ws.job_dir(job_id)) == 0, ws.job_log(job_id)
    assert ws.ingest_job(job_id), job_id


def refused(action, what: str) -> str:
    """A name the app validates must refuse the payload, naming what was wrong."""
    with pytest.raises((ValueError, KeyError)) as caught:
        action()
    assert caught.value.args, what
    return str(caught.value)


def seed_hostile(ws, folder: Path) -> dict:
    """Hostile text in every field, through the real write paths; returns what the pages show."""
    from core import backtranslate as bt
    from core import categories, curate, feedback, judge, ranking
    from core.selection import ExploreFilter

    hostile_ds = ExploreFilter(datasets=["hostile"])
    # Names are validated: the payload is refused (nothing is written).
    refusals = {
        "dataset": refused(lambda: ws.import_paths([write_jsonl(folder / "x.jsonl", [{"instruction": "q", "output": "a"}])],
                                                   SHORT), "dataset"),
        "model": refused(lambda: ws.add_model({"name": SHORT, "backend": "python", "path": "core.synthetic:teacher"}),
                         "model"),
    }
    # Instructions, inputs, system prompts and seed answers; a student's drafts; two answer pools.
    # Q1 starts with the script tag, Q2 with the image beacon, Q3 with the javascript: link and the KaTeX href.
    starts = {1: 0, 2: 3, 3: 6}
    rows = [{"instruction": f"Q{k} " + hostile(f"instruction-{k}", starts[k]), "input": hostile(f"input-{k}", starts[k]),
             "system": hostile(f"system-{k}", starts[k]), "output": hostile(f"seed-answer-{k}", starts[k]),
             "task": ("math", "open_qa", "coding")[k % 3]} for k in range(1, 4)]
    ws.import_paths([write_jsonl(folder / "hostile.jsonl", rows)], "hostile")
    for role in ("student", "pool_1", "pool_2"):
        answers = [{**r, "output": hostile(f"{role}-answer-{k}", starts[k])} for k, r in enumerate(rows, 1)]
        ws.import_paths([write_jsonl(folder / f"{role}.jsonl", answers)], "hostile", role=role)
    # An import with a hostile invalid row, skipped: the Import page lists the reject.
    bad = folder / "rejects.jsonl"
    bad.write_text(json.dumps({"instruction": "A fine row.", "output": "fine"}) + "\n"
                   + json.dumps({"instruction": "", "output": hostile("rejected-row")}) + "\n"
                   + hostile("not-json").replace("\n", " ") + "\n", encoding="utf-8")
    ws.import_paths([bad], "with-rejects", fmt="alpaca", skip_invalid=True)
    # Corpus documents: a hostile title and text.
    corpus = folder / "corpus"
    corpus.mkdir()
    prose = ("Tyres lose air slowly even when nothing is wrong, so it is worth checking them once a week. "
             "The recommended pressure is printed on the side of the tyre, usually as a range. ") * 3
    # Plain text keeps every character (an .md or .html file's tags are dropped on import); the
    # file's name is the document's title.
    (corpus / f"{FILE_NAME}.txt").write_text(f"{prose}\n\n{hostile('document')}\n", encoding="utf-8")
    ws.import_paths([corpus], "hostile-corpus", fmt="corpus")

    # Models: free-text fields (an API model id, a chat template) carry the payload.
    ws.add_model({"name": "hostile-api", "backend": "openai", "base_urls": ["http://127.0.0.1:9/v1"],
                  "model": hostile("model-id"), "chat_template": hostile("chat-template")})
    for name, fn, extra in ((WRITER, "hostile_answer", {}), (RANKER, "hostile_ranker", {}),
                            (REVISER, "hostile_reviser", {}), (BACKWARD, "hostile_backward", {}),
                            (CURATOR, "hostile_curator", {"role": "judge"})):
        ws.add_model({"name": name, "backend": "python", "path": f"tests.test_browser_xss:{fn}",
                      "extra": MODULE | extra})

    # Generation by a python backend: three hostile samples per instruction (round 1, role c1).
    run_and_ingest(ws, ws.create_job("generate", {"model": WRITER, "role": "c1", "n": 3, "temperature": 1.0,
                                                  "max_tokens": 2000, "seed": 1}, hostile_ds, round=1))
    # Listwise verdicts with hostile rationales (one list invalid: its raw text is shown).
    run_and_ingest(ws, ws.create_job("judge", {"model": RANKER, "rubric": "listwise", "roles": ["c1"], "seed": 4,
                                                "max_tokens": 2000},
                                     hostile_ds, round=1))
    ranked = ranking.rank_contextual(ws, RANKER, "c1", WRITER, round=1)
    assert ranked.ranked >= 1 and ranked.invalid >= 1, ranked
    refusals["ranking set"] = refused(lambda: ranking.freeze_ranking_set(ws, SHORT, method="contextual"),
                                      "ranking set")

    # Pointwise verdicts whose raw text (the rationale) is hostile, on the seed answers.
    seed_ids = [r["id"] for r in ws.store._dicts("SELECT id FROM responses WHERE role = 'seed' AND text LIKE '%XSS-PROBE%' "
                                                         "ORDER BY id")]
    raws = [hostile(f"rationale-{k}") + f"\nScore: {k % 5 + 1}" for k in range(len(seed_ids))]
    ws.record_judgments(judge.judgment_rows("pointwise_5", JUDGE, seed_ids, raws))
    # Aspect ratings with hostile rationales on both pools, binarised into preference pairs.
    ids, texts = [], []
    for iid in [r["id"] for r in ws.store.instructions_for_job(hostile_ds, 100)]:
        for role, score in (("pool_1", 5), ("pool_2", 2)):
            rid = next(r["id"] for r in ws.store.responses_for(iid) if r["role"] == role)
            ids.append(rid)
            texts.append("\n".join(f"{label} rationale: {hostile('aspect-rationale')}\n{label} score: {score}"
                                   for label in ASPECT_LABELS))
    ws.record_judgments(judge.judgment_rows("zephyr_aspects", ASPECT_JUDGE, ids, texts))
    assert feedback.binarise(ws, ASPECT_JUDGE, ["pool_1", "pool_2"], round=0).pairs == 3
    # Reviews with hostile notes (and a hostile reviewer name, if names are free text).
    # Reviews with hostile notes, a hostile edit and a hostile reviewer name (names of people are free text).
    for k, rid in enumerate(seed_ids[:2]):  # the third stays unlabeled: the judge's review queue holds it
        ws.review(rid, ("accept", "reject")[k % 2], note=hostile("review-note"), reviewer=MD_SHORT, source="explore",
                  edited_text=hostile("edited-text") if k == 0 else None)

    # Categories: a hostile name, description, criteria and example; members by MiniLM.
    categories.load_categories(ws, SCHEME, [{"name": MD_SHORT, "description": ONE_LINE,
                                             "criteria": list(PAYLOADS), "examples": [ONE_LINE]}],
                               proposals=False)
    categories.assign(ws, SCHEME, hostile_ds)
    # Revisions of the student's drafts by a python reviser.
    run_and_ingest(ws, ws.create_job("revise", {"model": REVISER, "scheme": SCHEME, "out_role": "revised"}, hostile_ds))
    # Backtranslation: hostile instructions for the corpus passages, rated by a python curator.
    run_and_ingest(ws, ws.create_job("backtranslate", {"model": BACKWARD, "out_dataset": "cands", "max_tokens": 400},
                                     ExploreFilter(datasets=["hostile-corpus"]), round=1))
    run_and_ingest(ws, ws.create_job("judge", {"model": CURATOR, "rubric": "pointwise_5", "roles": [bt.CANDIDATE_ROLE]},
                                     ExploreFilter(datasets=["cands"]), round=1))

    # Snapshots: a hostile name is refused; a valid one holds the hostile samples.
    refusals["snapshot"] = refused(lambda: curate.create_snapshot(ws, {"kind": "sft", "roles": ["seed"]}, SHORT),
                                   "snapshot")
    curate.create_snapshot(ws, {"kind": "sft", "roles": ["seed"]}, "hostile-sft")
    # A training job (not run): the Train page lists it with its snapshot.
    ws.create_training_job("hostile-trained", "hostile-sft", {"base_model": "tiny-random", "max_steps": 1})
    first = next(r["id"] for r in ws.store.instructions_for_job(hostile_ds, 100) if r["text"].startswith("Q1 "))
    document = ws.store._rows("SELECT id FROM documents WHERE text LIKE '%document XSS-PROBE%' LIMIT 1")[0][0]
    return {"refusals": refusals, "ids": {"instruction": first, "document": document}}


# --------------------------------------------------------------------------------------------
# The pages, in a real browser
# --------------------------------------------------------------------------------------------

def navigation() -> list[tuple[str, str]]:
    """(title, URL path) of every page in app.py's navigation, read from its source (importing
    app.py would run the router): a page added there is visited here without an edit."""
    import ast

    found: dict[str, object] = {}
    for node in ast.parse((REPO / "app.py").read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and target.id in ("HOME", "SECTIONS"):
                found[target.id] = ast.literal_eval(node.value)
    entries = [found["HOME"]] + [e for section in found["SECTIONS"].values() for e in section]
    # st.Page's URL: the file's stem without its leading number ("7_Difficulty_and_Tasks.py" → ...).
    return [(title, "" if (path, title, icon) == tuple(found["HOME"]) else re.sub(r"^\d+_", "", Path(path).stem))
            for path, title, icon in entries]


# Every element or attribute a payload could have turned into something live. Streamlit's own
# scripts carry no "__xss"; nothing of the app's names the beacon host.
# st.html puts its fragment in a shadow root: every walk below goes into shadow roots too.
ALL_ELEMENTS_JS = """function allElements(root) {
    const out = [];
    for (const el of root.querySelectorAll('*')) {
        out.push(el);
        if (el.shadowRoot) out.push(...allElements(el.shadowRoot));
    }
    return out;
}"""
LIVE_PAYLOAD_JS = """(host) => {
    """ + ALL_ELEMENTS_JS + """
    const found = [];
    if (window.__xss !== undefined) found.push('window.__xss = ' + window.__xss);
    for (const el of allElements(document)) {
        const tag = el.tagName.toLowerCase();
        if (tag === 'script' && /__xss|alert\\(/.test(el.textContent || '')) found.push('script: ' + el.textContent.slice(0, 80));
        if (tag === 'iframe' && (el.getAttribute('src') || '').includes(host)) found.push('iframe ' + el.getAttribute('src'));
        for (const a of el.attributes) {
            const name = a.name.toLowerCase(), value = a.value || '';
            if (name === 'value' && (tag === 'input' || tag === 'textarea')) continue;  // typed text, inert
            if (name.startsWith('on') && /__xss|alert/.test(value)) found.push(tag + ' ' + name + '=' + value.slice(0, 60));
            if (/^\\s*(javascript|vbscript|data):/i.test(value) && ['href', 'src', 'xlink:href', 'action', 'formaction'].includes(name)
                && !/^\\s*data:image\\//i.test(value)) found.push(tag + ' ' + name + '=' + value.slice(0, 60));
            if (value.includes(host)) found.push(tag + ' ' + name + '=' + value.slice(0, 60));
        }
    }
    return found;
}"""


@pytest.fixture(scope="module")
def hostile_workspace(tmp_path_factory) -> dict:
    from core.workspace import Workspace

    folder = tmp_path_factory.mktemp("browser-xss")
    started = time.monotonic()
    with Workspace(folder / "ws") as ws:
        seeded = seed_hostile(ws, folder)
    return {"root": folder / "ws", "seconds": time.monotonic() - started, **seeded}


def test_the_names_the_app_validates_refuse_the_payload(hostile_workspace):
    refusals = hostile_workspace["refusals"]
    assert set(refusals) == {"dataset", "model", "snapshot", "ranking set"}
    for what, message in refusals.items():
        assert "name" in message and SHORT in message, (what, message)


HOSTILE_RECIPE = (f"# {ONE_LINE}\n" + (REPO / "recipes" / "tapir-tiny.yaml").read_text(encoding="utf-8")
                  .replace("name: tapir-tiny", "name: '" + MD_SHORT + "'", 1))


class Visit:
    """One browser page walked through the app: settles, opens, looks, and keeps every problem."""

    def __init__(self, page, url: str, helpers: dict):
        self.page, self.url, self.h = page, url, helpers
        self.where = "start"
        self.problems: list[str] = []
        self.report: dict[str, dict] = {}

    def settle(self) -> None:
        """The script run is over and every element is drawn (Streamlit shows a skeleton while an
        element's code loads: a check before that would look at nothing)."""
        self.h["wait_idle"](self.page)
        self.page.wait_for_function("""() => {
            if (document.querySelector('[data-testid="stSkeletonElement"], [data-testid="stAppSkeleton"]')) return false;
            // st.html fills its element a moment after the element is there
            return [...document.querySelectorAll('[data-testid="stHtml"]')].every(el => el.childNodes.length > 0);
        }""", timeout=self.h["WAIT_MS"])

    def open_expanders(self) -> int:
        """Open every closed expander of the main area (client side: no rerun)."""
        closed = self.page.locator('[data-testid="stMain"] [data-testid="stExpander"] details:not([open]) > summary:visible')
        opened = 0
        for _ in range(20):
            if not closed.count():
                break
            closed.first.click()
            opened += 1
        self.settle()
        return opened

    def live(self, where: str) -> None:
        for frame in self.page.frames:
            try:
                live = frame.evaluate(LIVE_PAYLOAD_JS, BEACON_HOST)
            except self.h["sync_api"].Error:
                continue
            self.problems.extend(f"{where}: live payload: {x}" for x in live)

    def text(self) -> str:
        """The main area's text, and what its inputs and text areas hold. textContent, not
        innerText: Streamlit skips painting what is off screen, and innerText leaves it out. A
        payload parsed as markup would not be in it as characters (its tags become elements)."""
        return self.page.evaluate("""() => {
            """ + ALL_ELEMENTS_JS + """
            const main = document.querySelector('[data-testid="stMain"]');
            const parts = [main.textContent];
            for (const el of allElements(main)) {
                if (el.shadowRoot) parts.push(el.shadowRoot.textContent);
                if (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') parts.push(el.value);
            }
            return parts.join('\\n');
        }""").replace("\u2060", "")  # ui.md_escape's invisible word joiners (no bare-URL links)

    def steady_text(self, shows: tuple[str, ...] = ()) -> str:
        """The text once it holds `shows` and stops changing: Streamlit loads an element's code
        (st.html's, a dataframe's) on first use, and draws the element only then."""
        deadline = time.monotonic() + self.h["WAIT_MS"] / 1000
        before = self.text()
        while True:
            time.sleep(0.5)
            now = self.text()
            if (now == before and all(t in now for t in shows)) or time.monotonic() > deadline:
                return now
            before = now

    def look(self, label: str, shows: tuple[str, ...] = ()) -> None:
        """Check the page as it is now; `shows`: payload text the page must show as characters."""
        self.settle()
        where = f"{self.where} ({label})" if label else self.where
        text = self.steady_text(shows)  # before the live check: an element's code may still be loading
        self.live(where)
        exceptions = self.page.locator('[data-testid="stException"]')
        if exceptions.count():
            self.problems.append(f"{where}: exception: {exceptions.first.inner_text()[:300]}")
        # Each tab of the main area in turn (a hidden tab's text is not in innerText).
        tabs = self.page.locator('[data-testid="stMain"] [role="tab"]:visible')
        for i in range(min(tabs.count(), 12)):
            tabs.nth(i).click()
            self.settle()
            self.live(f"{where}, tab {i + 1}")
            text += "\n" + self.text()
        if tabs.count():
            tabs.first.click()
        missing = [t for t in shows if t not in text]
        if missing:
            dump = REPO / "tests" / "artifacts" / f"xss-text-{len(self.problems)}.txt"
            dump.parent.mkdir(parents=True, exist_ok=True)
            dump.write_text(f"{where}\n{text}", encoding="utf-8")
            self.problems.append(f"{where}: the payload is not shown as text: {missing}")
        self.report[where] = {"payload shown": any(t in text for t in (MARK, SHORT, MD_SHORT)), "checked": list(shows)}

    def go(self, title: str, path: str) -> None:
        """Open the page through the sidebar (no reload: the session and its socket stay up)."""
        self.where = title
        nav = self.page.locator('[data-testid="stSidebarNav"]')
        if not nav.count():
            self.page.goto(f"{self.url}/{path}", wait_until="domcontentloaded")
        else:
            more = nav.get_by_role("button", name=re.compile(r"^View \d+ more$"))
            if more.count():
                more.click()
            nav.get_by_role("link", name=title, exact=True).click()
            self.h["expect"](self.page).to_have_url(re.compile(re.escape(f"{self.url}/{path}") + r"(\?.*)?$"))
        # (not every page has a title: the Review page opens on its queue)
        self.h["expect"](self.page.locator('[data-testid="stMain"] [data-testid="stElementContainer"]').first).to_be_visible()
        self.settle()

    def radio(self, key: str, label: str) -> None:
        self.page.locator(f".st-key-{key}").get_by_text(label, exact=True).click()
        self.h["expect"](self.page.locator(f".st-key-{key}").get_by_role("radio", name=label)).to_be_checked()
        self.settle()


# What each page does beyond opening its expanders, and the payload text it must show. Pages not
# listed are only opened and checked (their text is names, counts or tables drawn on a canvas).
def explore(v: Visit, ids: dict) -> None:
    v.h["pick_option"](v.page, "Open sample", ids["instruction"][:8])
    v.settle()
    v.open_expanders()
    v.look("a hostile sample", (MARK, "instruction-1 XSS-PROBE", "input-1 XSS-PROBE", "seed-answer-1 XSS-PROBE",
                                "{{7*7}}", "$\\href{javascript:alert(1)}{x}$"))
    v.radio("explore_view", "Documents")
    v.h["pick_option"](v.page, "Open document", ids["document"][:8])
    v.look("a hostile document", (MARK, "document XSS-PROBE", FILE_NAME))


def rankings(v: Visit, ids: dict) -> None:
    # Only contextual rankings here (no answer has a log-prob): the page opens on them.
    v.look("contextual: valid and invalid verdicts", (MARK, "Invalid ranking"))


def rounds_page(v: Visit, ids: dict) -> None:
    v.look("a shipped recipe")
    v.radio("rounds_source", "Paste YAML")
    box = v.page.locator('[data-testid="stTextArea"]', has_text="Recipe YAML").locator("textarea")
    box.fill(HOSTILE_RECIPE)
    box.press("Control+Enter")
    v.look("a pasted hostile recipe", (MD_SHORT,))
    # the refusal names the recipe's name as characters (not only the text area holding the YAML)
    alerts = " ".join(v.page.locator('[data-testid="stAlert"]').all_text_contents()).replace("\u2060", "")
    if MD_SHORT not in alerts:
        v.problems.append(f"Rounds: the refusal does not show the recipe's name as text: {alerts[:300]}")


def review(v: Visit, ids: dict) -> None:
    from core.review_queue import QueueSource

    v.look("the default queue", (MARK,))
    # The judge's queue: the verdicts near the threshold, with their rationales.
    query = urllib.parse.urlencode(QueueSource("judge", judge_model=JUDGE, rubric="pointwise_5", threshold=3.0,
                                               size=5).to_query())
    v.page.goto(f"{v.url}/Review?{query}", wait_until="domcontentloaded")
    v.h["expect"](v.page.locator('[data-testid="stProgress"]').first).to_be_visible()
    v.look("the judge's queue", (MARK, "seed-answer"))


PAGE_CHECKS = {
    "Explore": explore,
    "Review": review,
    "Judgments": lambda v, ids: v.look("the first judge"),
    "Difficulty & tasks": lambda v, ids: v.look("", (MARK,)),
    "Rankings": rankings,
    "Rounds": rounds_page,
    # (the aspect rationales are in tables, drawn on a canvas)
    "Preferences": lambda v, ids: v.look("", (MARK, "pool_1-answer-1 XSS-PROBE")),
    "Backtranslation": lambda v, ids: v.look("", ("BT-PROBE <script>window.__xss=2</script>", "XSS-PROBE")),
    "Categories": lambda v, ids: v.look("", (MD_SHORT, ONE_LINE)),
    "Revisions": lambda v, ids: v.look("", (MARK, "revision XSS-PROBE", "student-answer-1 XSS-PROBE")),
}


def visit_every_page(root: Path, log_dir: Path, ids: dict, only: set[str] | None = None) -> dict:
    """One server, one browser, every page of the navigation in turn; returns what was found."""
    import test_browser as tb

    helpers = {"wait_idle": tb.wait_idle, "pick_option": tb.pick_option, "expect": tb.sync_api.expect,
               "sync_api": tb.sync_api, "WAIT_MS": tb.WAIT_MS}
    tb.sync_api.expect.set_options(timeout=tb.WAIT_MS)
    pages = [(t, p) for t, p in navigation() if only is None or t in only]
    outbound: list[str] = []
    dialogs: list[str] = []
    started = time.monotonic()
    with tb.serve(root, log_dir) as running, tb.sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(tb.CHROMIUM), args=tb.CHROMIUM_ARGS)
        try:
            page = tb.new_page(browser)
            visit = Visit(page, running["url"], helpers)

            def on_request(request) -> None:
                parts = urllib.parse.urlsplit(request.url)
                if parts.scheme not in ("data", "blob", "about") and parts.hostname not in tb.LOCAL_HOSTS:
                    outbound.append(f"{request.url} (on {visit.where})")

            def on_dialog(dialog) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message} (on {visit.where})")
                dialog.dismiss()

            page.on("request", on_request)
            page.on("dialog", on_dialog)
            for title, path in pages:
                began = time.monotonic()
                try:
                    visit.go(title, path)
                    opened = visit.open_expanders()
                    visit.look(f"{opened} expander(s) opened")
                    if title in PAGE_CHECKS:
                        PAGE_CHECKS[title](visit, ids)
                    tb.shot(page, f"xss-{path or 'Home'}")
                except (AssertionError, tb.sync_api.Error) as exc:
                    visit.problems.append(f"{visit.where}: could not be checked: {str(exc)[:400]}")
                    tb.shot(page, f"xss-{path or 'Home'}-failed")
                visit.report[f"{title}: seconds"] = round(time.monotonic() - began, 1)
        finally:
            browser.close()
    return {"pages": [t for t, _ in pages], "problems": visit.problems, "report": visit.report,
            "outbound": outbound, "dialogs": dialogs, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Skip before the workspace is built when there is no browser to drive."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is absent (install it with `apt-get install -y chromium`)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def test_hostile_text_is_inert_on_every_page(browser_ready, hostile_workspace, tmp_path_factory):
    found = visit_every_page(hostile_workspace["root"], tmp_path_factory.mktemp("server-xss"), hostile_workspace["ids"])
    print(f"\nseeded in {hostile_workspace['seconds']:.0f} s; {len(found['pages'])} pages in {found['seconds']:.0f} s")
    for where, facts in found["report"].items():
        print(f"  {where}: {facts}")
    assert found["pages"] == [t for t, _ in navigation()] and len(found["pages"]) >= 17
    assert not found["problems"], "\n".join(found["problems"])
    assert not found["dialogs"], found["dialogs"]
    assert not found["outbound"], f"the browser sent {len(found['outbound'])} request(s) to other hosts: {found['outbound']}"


def test_md_escape_keeps_bare_urls_from_becoming_links():
    """Streamlit's markdown links a bare URL even when each character is backslash-escaped (the
    Rounds page linked a pasted recipe's name this way): ui.md_escape breaks "://" and "www."."""
    import ui

    text = f"see http://{BEACON_HOST}/x.png, HTTPS://a.example and www.example.org"
    out = ui.md_escape(text)
    assert "://" not in out.replace("\\", "") and "www." not in out.replace("\\", "").lower()
    assert out.replace(ui.WORD_JOINER, "").replace("\\", "") == text  # the reader sees the same characters
