"""A real browser against a real `streamlit run`: home, Explore, a filter, a sample, a review, the
payload sample, the documents, the review queue with the keyboard alone, and the δ slider.

The test builds a demo workspace in a temporary folder, computes the numbers it expects with
read-only queries, closes the catalog, then starts `streamlit run app.py` on a free loopback port
(the server process owns the DuckDB file while it runs) and drives Debian's chromium through
Playwright's sync API. After the server stops, the test reopens the workspace and checks that the
review it saved through the browser is in the store.

Along the way it checks that no page shows an uncaught exception and that the browser sends no
request to any host but the local server (DESIGN.md §7: no external images, text shown as text).

Screenshots go to tests/artifacts/ (git-ignored); the README's (Home, Explore with a sample open,
the documents, the review queue, difficulty) are written to docs/ at 1400×900.

Needs /usr/bin/chromium (`apt-get install -y chromium`); the `playwright` package downloads no
browser of its own and this test never asks it to.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO

from core import rounds
from core.demo import build_demo
from core.store import EXPLORE_ORDERS
from core.store.documents import DocumentFilter
from core.workspace import ExploreFilter, Workspace

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = REPO / "tests" / "artifacts"
# The README's screenshots are retaken into docs/ only when asked (WINNOW_UPDATE_SCREENSHOTS=1):
# a plain test run writes them beside the other artifacts and leaves the checkout as it was.
SHOTS = REPO / "docs" if os.environ.get("WINNOW_UPDATE_SCREENSHOTS") == "1" else ARTIFACTS / "docs"
README_SHOT = SHOTS / "screenshot-explore.png"
HOME_SHOT = SHOTS / "screenshot-home.png"
DOCUMENTS_SHOT = SHOTS / "screenshot-documents.png"
REVIEW_SHOT = SHOTS / "screenshot-review.png"
VIEWPORT = {"width": 1400, "height": 900}
REVIEWER_KEY = "reviewer_name"  # ui.REVIEWER_KEY (ui imports streamlit's runtime; the test does not)
WAIT_MS = 30_000  # per explicit wait
SERVER_START_S = 60
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TASK = "math"  # the Explore filter the test applies
NOTE = "browser test: wrong arithmetic"
DATASETS = ("seed", "eval", "python-docs")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (install it with `apt-get install -y chromium`); "
                "the real-browser test never downloads a browser", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = sync_api.expect


# --------------------------------------------------------------------------------------------
# The workspace and the server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAYLOAD = ("# Payload heading\n\n- first point\n- second point\n\n"
           "```python\ndef payload_add(a, b):\n    return a + b\n```\n\n"
           "<script>window.__pwned = 'script'</script>\n"
           "<img src=\"http://evil.example/i.png\" onerror=\"window.__pwned = 'img'\">\n"
           "![tracker pixel](http://evil.example/t.png)\n\n"
           "[click me](javascript:window.__pwned='link') and <http://evil.example/auto>\n")
PAYLOAD_INSTRUCTION = "Show the browser payload sample, rendered safely."
QUEUE_JUDGE, QUEUE_RUBRIC, QUEUE_THRESHOLD, QUEUE_SIZE = "browser-judge", "pointwise_5", 3.0, 20
REVIEWER = "ana"
PRELABELED = 6  # labels stored before the queue opens, so the precision interval starts known


def judge_the_seed(ws: Workspace) -> list[str]:
    """Verdicts of a made-up judge on every seed answer (scores 1-5 from the answer's id, so the
    queue near threshold 3 is deterministic), and a few human labels; returns the labeled ids."""
    from core import judge as judge_mod

    rids = [r[0] for r in ws.store._rows("SELECT id FROM responses WHERE role = 'seed' ORDER BY id")]
    raws = [f"Score: {int(rid[:6], 16) % 5 + 1}" for rid in rids]
    assert ws.record_judgments(judge_mod.judgment_rows(QUEUE_RUBRIC, QUEUE_JUDGE, rids, raws)) == len(rids)
    kept = [rid for rid, raw in zip(rids, raws, strict=True) if int(raw[-1]) >= QUEUE_THRESHOLD]
    labeled = kept[-PRELABELED:]
    for k, rid in enumerate(labeled):
        ws.review(rid, "accept" if k % 2 else "reject", reviewer="setup")
    return labeled


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """A demo workspace on disk (plus a payload sample and a judge's verdicts), and what the test
    expects to see, all read before the server starts. The catalog is closed on return: the
    server process must own it."""
    folder = tmp_path_factory.mktemp("browser")
    root = folder / "ws"
    ws = Workspace(root)
    try:
        build_demo(ws)
        payload = folder / "payload.jsonl"
        payload.write_text(json.dumps({"instruction": PAYLOAD_INSTRUCTION, "output": PAYLOAD}) + "\n")
        ws.import_paths([payload], "payload")
        judge_the_seed(ws)
        order = next(iter(EXPLORE_ORDERS))  # the page's default order
        total = ws.explore_count(ExploreFilter())
        selection = ExploreFilter(tasks=[TASK])
        count = ws.explore_count(selection)
        rows = ws.explore_page(selection, 0, 50, order)
        # The first matching instruction that has a response: its review form is the first form.
        with_response = rows[rows["n_responses"] > 0]
        assert not with_response.empty, f"no {TASK!r} instruction with a response in the demo data"
        sample = ws.sample(with_response["id"].iloc[0])
        names = set(ws.store.datasets()["name"])
        n_documents = int(ws.stats()["documents"])
        first_document = ws.store.documents_page(DocumentFilter(), limit=1, offset=0).iloc[0].to_dict()
        payload_id = ws.explore_page(ExploreFilter(search=PAYLOAD_INSTRUCTION), 0, 1, order)["id"].iloc[0]
    finally:
        ws.close()
    assert set(DATASETS) <= names, names
    assert 0 < count < total, (count, total)
    assert n_documents > 0
    return {"root": root, "total": total, "count": count, "instruction": sample["instruction"],
            "response": sample["responses"][0], "n_documents": n_documents, "document": first_document,
            "payload_id": payload_id}


@contextlib.contextmanager
def serve(root: Path, log_dir: Path):
    """`streamlit run app.py` on the workspace at `root`, on a free loopback port, until the block
    ends (then terminated); yields {url, proc, log}."""
    port = free_port()
    log_path = log_dir / "streamlit.log"
    env = dict(os.environ, WINNOW_WORKSPACE=str(root), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # an edit elsewhere in the checkout must not rerun the app
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"streamlit not healthy after {SERVER_START_S} s:\n"
                                     f"{log_path.read_text(errors='replace')}")
            time.sleep(0.25)
        yield {"url": base, "proc": proc, "log": log_path}
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server(demo, tmp_path_factory):
    """`streamlit run app.py` on a free loopback port; always terminated on teardown."""
    with serve(demo["root"], tmp_path_factory.mktemp("server")) as running:
        yield running


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# --------------------------------------------------------------------------------------------
# Page helpers
# --------------------------------------------------------------------------------------------


def wait_idle(page) -> None:
    """Wait until the app is connected and no script run is in progress or queued (Streamlit reruns
    the page on every widget change). Call it after the change's effect is visible: right after a
    click the run may not have started yet."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning';
        }""",
        timeout=WAIT_MS,
    )


def until(page, action, check, attempts: int = 3, timeout_ms: int = 3_000) -> None:
    """Do `action` until `check(timeout_ms)` passes. Under load a click on a menu option that has
    just opened is sometimes lost (no selection, no rerun); `check` looks at the widget itself,
    which changes in the browser at once, so a lost click costs seconds, not a timeout. `action`
    must be safe to repeat. The last attempt's check waits the full WAIT_MS."""
    for attempt in range(attempts):
        wait_idle(page)
        action()
        try:
            check(WAIT_MS if attempt == attempts - 1 else timeout_ms)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def assert_no_exception(page, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    if exceptions.count():
        raise AssertionError(f"exception shown on {where}: {exceptions.first.inner_text()}")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def metric_value(page, label: str):
    return page.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]')


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def watch_requests(page) -> list[str]:
    """Every request the page sends to a host other than the local server."""
    outbound: list[str] = []

    def on_request(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOCAL_HOSTS:
            outbound.append(request.url)

    page.on("request", on_request)
    return outbound


def assert_nothing_left_the_machine(outbound: list[str]) -> None:
    # Last in a test, so that a leak does not hide the checks before it (DESIGN.md §9).
    hint = ("; a `:material/...:` page_icon in st.set_page_config makes Streamlit's frontend load the "
            "favicon from fonts.gstatic.com: use an emoji or a local image file instead"
            if any("fonts.gstatic.com" in url for url in outbound) else "")
    assert not outbound, f"the browser sent {len(outbound)} request(s) to other hosts: {outbound}{hint}"


def new_page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    return context.new_page()


def readme_shot(page, path: Path) -> None:
    """A screenshot for the README at the viewport's size (1400×900), scrolled to the top."""
    page.evaluate("""() => {
        document.activeElement && document.activeElement.blur();
        window.scrollTo(0, 0);
        for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')) {
            el.scrollTop = 0;
        }
    }""")
    wait_idle(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def pick_option(page, label: str, prefix: str) -> None:
    """Choose the option that starts with `prefix` in the selectbox labelled `label`."""
    # Not the stale copy a rerun leaves for a moment (Streamlit marks it data-stale="true").
    picker = (page.locator('[data-testid="stElementContainer"]:not([data-stale="true"])')
              .filter(has=page.locator('[data-testid="stSelectbox"]', has_text=label)).locator("input"))
    chosen = re.compile("^" + re.escape(prefix) + " · ")  # the option's label, not typed text

    def choose() -> None:
        try:
            if not chosen.match(picker.input_value(timeout=5_000)):
                picker.click(timeout=5_000)
                picker.fill(prefix, timeout=5_000)
                page.get_by_role("option").filter(has_text=prefix).first.click(timeout=5_000)
        except sync_api.Error:
            pass  # a rerun replaced the widget mid-way: the check fails and the next attempt retries

    until(page, choose, lambda ms: expect(picker).to_have_value(chosen, timeout=ms))


def test_home_explore_review_payload_and_documents(demo, server):
    ins, response = demo["instruction"], demo["response"]
    rid = response["id"]
    expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = new_page(browser)
            outbound = watch_requests(page)

            # Home: the sidebar's first entry is Home, and the card names the next step.
            page.goto(server["url"], wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Winnow", exact=True)).to_be_visible()
            expect(page.locator('[data-testid="stSidebarNav"] a').first).to_contain_text("Home")
            card = page.locator(".st-key-home_start_here")
            expect(card).to_contain_text("Start here")
            expect(metric_value(page, "Datasets")).to_have_text(str(len(DATASETS) + 1))  # + the payload
            wait_idle(page)
            assert_no_exception(page, "home")
            shot(page, "01-home")
            readme_shot(page, HOME_SHOT)

            # Explore, unfiltered, through the sidebar.
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Explore").click()
            expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible()
            count = metric_value(page, "Matching instructions")
            expect(count).to_have_text(f"{demo['total']:,}")
            wait_idle(page)
            assert_no_exception(page, "Explore")
            # Filter by task: the count drops to the number the store gave before the server started.
            tasks = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]', has_text="Tasks")
            chip = tasks.locator(f'button[aria-label="Remove {TASK}"]')  # the selected value's tag

            def pick_task() -> None:
                if not chip.count():
                    try:  # a rerun that lands now closes the menu: the next attempt opens it again
                        field = tasks.locator("input")
                        field.click(timeout=5_000)
                        # Typing filters the list: the option is rendered even when the menu has
                        # room for a few rows only (it is virtualised, and at 900 px the sidebar's
                        # Tasks field can sit low on the screen).
                        field.fill(TASK, timeout=5_000)
                        page.get_by_role("option", name=TASK, exact=True).click(timeout=5_000)
                    except sync_api.Error:
                        pass
                # Close the menu by clicking away rather than with Escape, whose effect depends on
                # whether a rerun already closed the menu. (CSS, not a role: while the menu is open
                # the rest of the page is aria-hidden.)
                page.locator('[data-testid="stMain"] h1').first.click()

            until(page, pick_task, lambda ms: expect(chip).to_have_count(1, timeout=ms), attempts=5)
            expect(count).to_have_text(f"{demo['count']:,}")
            wait_idle(page)
            assert_no_exception(page, "Explore, filtered")
            shot(page, "02-explore-filtered")
            name = page.locator(f".st-key-{REVIEWER_KEY} input")
            name.fill(REVIEWER)
            name.press("Enter")
            expect(name).to_have_value(REVIEWER)

            # A judge's latest score beside each row (the README shot shows it).
            judge_picker = page.locator('[data-testid="stSelectbox"]', has_text="Judge score").locator("input")

            def pick_judge() -> None:
                if QUEUE_JUDGE not in judge_picker.input_value():
                    judge_picker.click()
                    try:
                        page.get_by_role("option").filter(has_text=QUEUE_JUDGE).first.click(timeout=5_000)
                    except sync_api.TimeoutError:
                        pass

            until(page, pick_judge, lambda ms: expect(judge_picker).to_have_value(re.compile(QUEUE_JUDGE),
                                                                                   timeout=ms))
            wait_idle(page)

            # Open the sample: it shows beside the table, and its review form below.
            pick_option(page, "Open sample", ins["id"][:8])
            expect(page.get_by_role("heading", name="Sample", exact=True)).to_be_visible()
            expect(page.locator(f".st-key-explore_save_{rid}")).to_be_attached()
            wait_idle(page)
            assert_no_exception(page, "Explore, sample open")
            shot(page, "03-explore-sample")
            readme_shot(page, README_SHOT)

            # Reject the sample's first response with a note; the form then shows the saved decision.
            page.locator(f".st-key-explore_decision_{rid}").get_by_text("Reject", exact=True).click()
            page.locator(f".st-key-explore_note_{rid} input").fill(NOTE)
            page.locator(f".st-key-explore_save_{rid} button").click()
            expect(page.get_by_text("Review saved.", exact=False)).to_be_visible()
            expect(page.locator(f".st-key-explore_decision_{rid}").get_by_role("radio", name="Reject")).to_be_checked()
            wait_idle(page)
            assert_no_exception(page, "Explore, after review")
            shot(page, "04-explore-reviewed")

            # The payload sample: markdown and code render, the HTML shows as text, nothing runs.
            until(page, lambda: chip.click() if chip.count() else None,
                  lambda ms: expect(chip).to_have_count(0, timeout=ms))
            search = page.locator('.st-key-explore_search input')
            search.fill("browser payload")
            search.press("Enter")
            expect(count).to_have_text("1")
            wait_idle(page)
            pick_option(page, "Open sample", demo["payload_id"][:8])
            rendered = page.locator(".winnow-md", has_text="Payload heading").first
            expect(rendered.locator("h3", has_text="Payload heading")).to_be_visible()
            expect(rendered.locator("li")).to_have_count(2)
            expect(rendered.locator("pre", has_text="def payload_add")).to_be_visible()
            assert rendered.locator("pre span").count() > 3, "the code block is not highlighted"
            expect(rendered).to_contain_text("<script>window.__pwned = 'script'</script>")
            expect(rendered).to_contain_text("tracker pixel")
            wait_idle(page)
            assert page.locator(".winnow-md img, .winnow-md a, .winnow-md script, .winnow-md iframe").count() == 0
            assert page.evaluate("() => window.__pwned === undefined"), page.evaluate("() => window.__pwned")
            assert_no_exception(page, "Explore, payload")
            shot(page, "05-payload")

            # Documents: the corpus passages, one opened with its source and position.
            page.locator(".st-key-explore_view").get_by_text("Documents", exact=True).click()
            expect(metric_value(page, "Matching documents")).to_have_text(f"{demo['n_documents']:,}")
            wait_idle(page)
            pick_option(page, "Open document", demo["document"]["id"][:8])
            expect(page.get_by_text("Source file:", exact=False).first).to_be_visible()
            expect(page.get_by_text("Position: line", exact=False).first).to_be_visible()
            expect(page.get_by_text("Instructions generated from it", exact=True)).to_be_visible()
            wait_idle(page)
            assert_no_exception(page, "Explore, documents")
            shot(page, "06-documents")
            readme_shot(page, DOCUMENTS_SHOT)
        finally:
            browser.close()

    # The server owns the catalog while it runs: stop it, then read the review back.
    stop(server["proc"])
    with Workspace(demo["root"]) as ws:
        reviews = ws.store.reviews_for([rid])
    assert len(reviews) == 1, reviews
    assert (reviews[0]["decision"], reviews[0]["note"], reviews[0]["target_kind"]) == ("reject", NOTE, "response")
    assert (reviews[0]["reviewer"], reviews[0]["source"]) == (REVIEWER, "explore")
    assert_nothing_left_the_machine(outbound)


# --------------------------------------------------------------------------------------------
# The review queue, with the keyboard alone
# --------------------------------------------------------------------------------------------

HALF_WIDTHS = re.compile(r"precision ± (\d\.\d\d) → ± (\d\.\d\d) after (\d+) new labels?")


def test_review_queue_from_the_judge_with_the_keyboard(demo, server, tmp_path_factory):
    """A reviewer labels 20 records in a row from the judge's suggestions with the keyboard only
    (Tab to the name, type it, Enter, Tab, then A or X per record) and sees the calibration
    interval narrow; all 20 are stored with the reviewer's name and the queue as their source."""
    from urllib.parse import urlencode

    from core.review_queue import QueueSource

    stop(server["proc"])  # the first test's server, if it is still up: one process owns the catalog
    source = QueueSource("judge", judge_model=QUEUE_JUDGE, rubric=QUEUE_RUBRIC, threshold=QUEUE_THRESHOLD,
                         size=QUEUE_SIZE)
    keys = ["a" if k % 2 == 0 else "x" for k in range(QUEUE_SIZE)]
    expect.set_options(timeout=WAIT_MS)
    with serve(demo["root"], tmp_path_factory.mktemp("server-review")) as running, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = new_page(browser)
            outbound = watch_requests(page)
            page.goto(f"{running['url']}/Review?{urlencode(source.to_query())}", wait_until="domcontentloaded")
            progress = page.locator('[data-testid="stProgress"]').first
            expect(progress).to_contain_text(f"0 of {QUEUE_SIZE} done")
            wait_idle(page)
            assert_no_exception(page, "Review")
            # A deep link on a fresh server still runs through the router (app.py): its navigation
            # (Home first) and its sidebar switch are there.
            expect(page.locator('[data-testid="stSidebarNav"] a').first).to_contain_text("Home")
            expect(page.get_by_text("Show raw text", exact=True)).to_be_visible()

            # Keyboard only: Tab until the reviewer name has focus, type it, Enter, Tab away.
            name_input = page.locator(f".st-key-{REVIEWER_KEY} input")
            for _ in range(80):
                if name_input.evaluate("el => el === document.activeElement"):
                    break
                page.keyboard.press("Tab")
            else:
                raise AssertionError("Tab never reached the reviewer name")
            page.keyboard.type(REVIEWER)
            page.keyboard.press("Enter")
            expect(page.locator(".st-key-review_accept button").first).to_be_enabled()
            page.keyboard.press("Tab")
            wait_idle(page)

            calibration = page.locator('[data-testid="stAlert"]', has_text="precision ±").first
            for k, key in enumerate(keys):
                expect(progress).to_contain_text(f"{k} of {QUEUE_SIZE} done")
                wait_idle(page)
                page.keyboard.press(key)
                expect(progress).to_contain_text(f"{k + 1} of {QUEUE_SIZE} done")
                if k == QUEUE_SIZE // 2:
                    wait_idle(page)
                    shot(page, "07-review-queue")
                    readme_shot(page, REVIEW_SHOT)
            wait_idle(page)
            expect(page.get_by_text(f"This queue is done: all {QUEUE_SIZE} records have a decision.")).to_be_visible()
            match = HALF_WIDTHS.search(calibration.inner_text())
            assert match, calibration.inner_text()
            before, after, added = float(match.group(1)), float(match.group(2)), int(match.group(3))
            assert added == QUEUE_SIZE and after < before, match.group(0)
            assert_no_exception(page, "Review, done")
            shot(page, "08-review-done")
        finally:
            browser.close()

    with Workspace(demo["root"]) as ws:
        stored = ws.store._dicts("SELECT decision, reviewer, source, target_kind FROM reviews "
                                 "WHERE source = 'queue:judge' ORDER BY created_at")
    assert [r["decision"] for r in stored] == ["accept" if key == "a" else "reject" for key in keys]
    assert {(r["reviewer"], r["target_kind"]) for r in stored} == {(REVIEWER, "response")}
    assert_nothing_left_the_machine(outbound)


# --------------------------------------------------------------------------------------------
# Difficulty & tasks: the δ slider, moved with the keyboard
# --------------------------------------------------------------------------------------------

DIFFICULTY_SHOT = SHOTS / "screenshot-difficulty.png"
DELTA_STEP = 0.25  # the slider's step (core.views.delta_range)
DELTA_MOVES = ((4, "ArrowRight"), (8, "ArrowLeft"))  # δ 0 → 1 → -1


@pytest.fixture(scope="module")
def difficulty_demo(tmp_path_factory) -> dict:
    """The seed with teacher and student answers, verdicts and MFD (tests/test_pages_difficulty.py
    builds it through the real API), and the kept totals expected at each δ the test visits, all
    computed before the server starts; the catalog is closed on return."""
    from test_pages_difficulty import build_mfd_workspace, reference_kept

    folder = tmp_path_factory.mktemp("browser-difficulty")
    root = folder / "ws"
    ws = Workspace(root)
    try:
        built = build_mfd_workspace(ws, folder / "answers")
    finally:
        ws.close()
    deltas, delta = [0.0], 0.0
    for n, key in DELTA_MOVES:
        delta += n * DELTA_STEP * (1 if key == "ArrowRight" else -1)
        deltas.append(delta)
    kept = {d: sum(k for _, k in reference_kept(built["rows"], d).values()) for d in deltas}
    assert len(set(kept.values())) == len(deltas), kept  # every move changes the count
    return {"root": root, "kept": kept, "deltas": deltas}


def test_difficulty_delta_slider_with_the_keyboard(difficulty_demo, tmp_path_factory):
    outbound: list[str] = []

    def on_request(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOCAL_HOSTS:
            outbound.append(request.url)

    kept, deltas = difficulty_demo["kept"], difficulty_demo["deltas"]
    expect.set_options(timeout=WAIT_MS)
    with serve(difficulty_demo["root"], tmp_path_factory.mktemp("server-difficulty")) as running, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            page.on("request", on_request)

            page.goto(f"{running['url']}/Difficulty_and_Tasks", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Difficulty & tasks", exact=True)).to_be_visible()
            count = metric_value(page, "Kept (MFD > δ)")
            expect(count).to_have_text(f"{kept[deltas[0]]:,}")
            wait_idle(page)
            assert_no_exception(page, "Difficulty & tasks")

            # The thumb is an <input type="range"> (role slider, implicit in Streamlit 1.67's markup).
            slider = page.locator('[data-testid="stSlider"]', has_text="keep MFD > δ")
            thumb = slider.get_by_role("slider")
            for (n, key), delta in zip(DELTA_MOVES, deltas[1:], strict=True):
                wait_idle(page)
                thumb.focus()
                for _ in range(n):
                    thumb.press(key)
                expect(thumb).to_have_value(f"{delta:g}")
                expect(slider.locator('[data-testid="stSliderThumbValue"]')).to_have_text(f"{delta:.2f}")
                expect(count).to_have_text(f"{kept[delta]:,}")
                wait_idle(page)
                assert_no_exception(page, f"Difficulty & tasks at δ = {delta:g}")

            page.evaluate("() => document.activeElement && document.activeElement.blur()")
            wait_idle(page)
            shot(page, "difficulty")
            DIFFICULTY_SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DIFFICULTY_SHOT))
            assert_no_exception(page, "Difficulty & tasks, after the moves")
        finally:
            browser.close()

    assert not outbound, f"the browser sent {len(outbound)} request(s) to other hosts: {outbound}"


# --------------------------------------------------------------------------------------------
# A tiny round, started in the browser, watched to the end
# --------------------------------------------------------------------------------------------

ROUNDS_SHOT = SHOTS / "screenshot-rounds.png"
ROUND_S = 600  # one synthetic round on 2 busy cores takes 1–3 minutes


def test_a_tiny_round_started_in_the_browser_runs_to_the_end(tmp_path_factory):
    """Paste a one-round synthetic TAPIR recipe on the Rounds page, press Start, and watch the
    run's status reach "done" (1 of 1 rounds): the app's owner thread advanced every step (jobs,
    snapshots, a training job, an evaluation) while the page only showed it."""
    import yaml
    from test_rounds import synthetic_recipe

    folder = tmp_path_factory.mktemp("browser-rounds")
    recipe = synthetic_recipe(folder, name="browser-adder", rounds_=1)
    recipe["train"] = recipe["train"] | {"max_steps": 10}
    Workspace(folder / "ws").close()
    expect.set_options(timeout=WAIT_MS)
    with serve(folder / "ws", folder) as running, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = new_page(browser)
            outbound = watch_requests(page)
            page.goto(f"{running['url']}/Rounds", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Rounds", exact=True)).to_be_visible()
            wait_idle(page)
            page.get_by_text("Paste YAML").click()
            box = page.locator('[data-testid="stTextArea"]', has_text="Recipe YAML").locator("textarea")
            expect(box).to_be_visible()
            box.fill(yaml.safe_dump(recipe, sort_keys=False))
            box.press("Control+Enter")  # commit the text (a rerun shows the recipe's facts)
            wait_idle(page)
            start = page.get_by_role("button", name="Start", exact=True)
            expect(start).to_be_enabled()
            start.click()
            expect(page.get_by_text("Started run browser-adder", exact=False)).to_be_visible()
            assert_no_exception(page, "Rounds, after Start")
            # the live panel refreshes every 2 s while the run is active
            expect(metric_value(page, "Run status")).to_have_text("done", timeout=ROUND_S * 1000)
            expect(metric_value(page, "Rounds done")).to_have_text("1 / 1")
            wait_idle(page)
            # The run selector's label is checked on a fresh view of the page: on a loaded machine
            # (two test workers) it was seen to keep "active · 0 of 1" after the live panel said
            # done, the panel's page rerun apparently lost to its own timed refresh.
            page.reload(wait_until="domcontentloaded")
            wait_idle(page)
            expect(page.locator('[data-testid="stSelectbox"]', has_text="Run").locator("input").first).to_have_value(
                re.compile("^browser-adder · done · 1 of 1 rounds"))
            assert_no_exception(page, "Rounds, after the round")
            shot(page, "rounds")
            readme_shot(page, ROUNDS_SHOT)
        finally:
            browser.close()
    assert_nothing_left_the_machine(outbound)
    with Workspace(folder / "ws") as ws:
        status = rounds.run_status(ws, "browser-adder")
        assert status["status"] == "done" and status["rounds"][0]["model"] == "browser-adder-r1"
        assert all(s["status"] == "done" for s in status["rounds"][0]["steps"])
        assert ws.model_lineage("browser-adder-r1")["round"] == 1


PREFERENCES_SHOT = SHOTS / "screenshot-preferences.png"
REVISIONS_SHOT = SHOTS / "screenshot-revisions.png"


def test_a_preference_pair_gets_a_verdict_and_a_revision_shows_its_diff(tmp_path_factory):
    """Preferences: Zephyr's binarised pairs, chosen and rejected side by side with their ratings;
    a verdict is saved from the browser. Revisions: CITING's draft and revision with the word diff,
    the model text (a <script> in the draft) shown as text. Nothing leaves the machine."""
    from test_pages_preferences import make_pairs
    from test_revise import run_job

    from core import categories, feedback

    folder = tmp_path_factory.mktemp("browser-methods")
    with Workspace(folder / "ws") as ws:
        make_pairs(ws, folder)
        ws.add_model({"name": "reviser", "backend": "python", "path": "tests.test_revise:reviser",
                      "extra": {"modules": ["tests.test_revise"]}})
        from conftest import write_jsonl

        ws.import_paths([write_jsonl(folder / "drafts.jsonl", [
            {"instruction": "Name a fruit.", "output": "an apple <script>window.__pwned = 1</script>"}])],
            "drafts", role="student")
        categories.load_categories(ws, "s", [{"name": "General", "criteria": ["right", "short"],
                                              "examples": ["Name a vegetable."]}], proposals=False)
        categories.assign(ws, "s", ExploreFilter(datasets=["drafts"]))
        run_job(ws, ws.create_job("revise", {"model": "reviser", "scheme": "s", "out_role": "revised"},
                                  ExploreFilter(datasets=["drafts"])))
    expect.set_options(timeout=WAIT_MS)
    with serve(folder / "ws", folder) as running, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = new_page(browser)
            outbound = watch_requests(page)
            page.goto(f"{running['url']}/Preferences", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Preferences", exact=True)).to_be_visible()
            wait_idle(page)
            assert_no_exception(page, "Preferences")
            # largest margin first: the colour question (ratings 5 against 2)
            expect(page.get_by_text(re.compile(r"margin\s+3\.00")).first).to_be_visible()
            # the answers' markup is text: "<b>pool_1</b>" shows its angle brackets, nothing is bold
            expect(page.get_by_text("<b>pool_1</b> answers Name a colour.", exact=False).first).to_be_visible()
            assert page.locator("b", has_text="pool_1").count() == 0
            page.get_by_role("button", name="Chosen is better").first.click()
            expect(page.get_by_text("Saved: chosen is better.", exact=False)).to_be_visible()
            wait_idle(page)
            readme_shot(page, PREFERENCES_SHOT)

            page.goto(f"{running['url']}/Revisions", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Revisions", exact=True)).to_be_visible()
            wait_idle(page)
            assert_no_exception(page, "Revisions")
            expect(page.get_by_text("category: General", exact=False)).to_be_visible()
            inserted = page.locator(".diff-ins").first
            expect(inserted).to_be_visible()
            assert "<SCRIPT>" in inserted.inner_text().upper()  # the revision's tag, shown as text
            expect(page.locator(".diff-del").first).to_be_visible()
            assert page.evaluate("() => window.__pwned === undefined")
            readme_shot(page, REVISIONS_SHOT)
        finally:
            browser.close()
    assert_nothing_left_the_machine(outbound)
    with Workspace(folder / "ws") as ws:  # the verdict is a review of the pair, as the judge's calibration reads it
        assert feedback.human_agreement(ws, "aspect-m").n_verdicts == 1
