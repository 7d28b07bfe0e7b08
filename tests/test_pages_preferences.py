"""AppTest tests for the Preferences page (app_pages/12_Preferences.py) on a real workspace: the
empty state says what to do; binarised AI-feedback pairs show chosen and rejected side by side
with their aspect ratings and rationales, largest margin first; the three verdict buttons save
a review of the pair, and the agreement with its interval follows."""

from __future__ import annotations

import json

from conftest import open_page

from core import feedback, judge
from core import preferences_views as views

PAGE = "12_Preferences.py"
JUDGE = "aspect-m"
LABELS = ("Helpfulness", "Honesty", "Instruction following", "Truthfulness")
# question -> (pool_1's four ratings, pool_2's): margins 3.0, 1.0, 2.0
RATINGS = {"Name a colour.": ((5, 5, 5, 5), (2, 2, 2, 2)), "What is 2+2?": ((4, 4, 4, 4), (3, 3, 3, 3)),
           "Say hi.": ((2, 2, 2, 2), (4, 4, 4, 4))}


def verdict_text(ratings) -> str:
    return "\n".join(f"{label} rationale: the {label.lower()} rationale.\n{label} score: {s}"
                     for label, s in zip(LABELS, ratings, strict=True))


def make_pairs(ws, tmp_path) -> list[dict]:
    for role in ("pool_1", "pool_2"):
        rows = [{"instruction": q, "output": f"<b>{role}</b> answers {q}"} for q in RATINGS]
        path = tmp_path / f"{role}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        ws.import_paths([path], "pool", role=role)
    ids, texts = [], []
    for q, per_role in RATINGS.items():
        iid = next(r["id"] for r in ws.store.instructions_for_job(views_selection(), 100) if r["text"] == q)
        by_role = {r["role"]: r["id"] for r in ws.store.responses_for(iid)}
        for role, ratings in zip(("pool_1", "pool_2"), per_role, strict=True):
            ids.append(by_role[role])
            texts.append(verdict_text(ratings))
    ws.record_judgments(judge.judgment_rows("zephyr_aspects", JUDGE, ids, texts))
    summary = feedback.binarise(ws, JUDGE, ["pool_1", "pool_2"], round=0)
    assert summary.pairs == 3
    return ws.store.feedback_pairs(JUDGE)


def views_selection():
    from core.selection import ExploreFilter

    return ExploreFilter()


def test_empty_page_says_what_to_do(app_ws):
    at = open_page(PAGE)
    assert [i.value for i in at.info] == [views.EMPTY]


def test_pairs_side_by_side_and_a_verdict_is_saved(app_ws, tmp_path):
    pairs = make_pairs(app_ws, tmp_path)
    cards = views.pair_cards(app_ws)
    assert [c["margin"] for c in cards] == [3.0, 2.0, 1.0]  # largest margin first
    first = cards[0]
    assert [r["score"] for r in first["chosen_aspects"]] == [5.0] * 4 and first["mode"] == "generate"
    assert first["chosen_aspects"][0]["why"].startswith("the ") and first["verdict"] == "no verdict yet"

    at = open_page(PAGE)
    assert not at.exception, at.exception
    assert "0.00" not in at.metric[0].value and at.metric[0].value.startswith("n/a")
    markdown = [m.value.replace("\\", "") for m in at.markdown]  # ui.md_escape's backslashes
    assert sum("margin **3.00**" in m for m in markdown) == 1
    assert any("**Chosen** · pool_1" in m for m in markdown) and any("**Rejected** · pool_2" in m for m in markdown)
    assert len(at.dataframe) == 6  # both sides of three pairs
    # Model text is rendered safely: the answer's <b> is text, not markup.
    bodies = [h.proto.body for h in at.get("html")]
    assert any("&lt;b&gt;pool_1&lt;/b&gt;" in b for b in bodies) and not any("<b>pool_1</b>" in b for b in bodies)
    top = first["pair_id"]
    at.button(key=f"prefs_chosen_btn_{top}").click().run()
    assert not at.exception, at.exception
    assert any("Saved: chosen is better." in s.value.replace("\\", "") for s in at.success)
    second = cards[1]["pair_id"]
    at.button(key=f"prefs_rejected_btn_{second}").click().run()
    at.button(key=f"prefs_tie_btn_{cards[2]['pair_id']}").click().run()
    agreement = feedback.human_agreement(app_ws, JUDGE)
    assert (agreement.n_verdicts, agreement.n_ties, agreement.agreement.k, agreement.agreement.n) == (3, 1, 1, 2)
    assert at.metric[0].value.startswith("0.50 [") and at.metric[2].value == "3 (1 ties)"
    assert {p["id"] for p in pairs} == {c["pair_id"] for c in cards}
    assert any("your verdict: *chosen better*" in m.value.replace("\\", "") for m in at.markdown)
    at.selectbox(key="prefs_round").set_value(0).run()
    assert not at.exception and len(at.dataframe) == 6
