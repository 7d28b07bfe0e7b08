"""Golden tests for the judge parsers (core/parsers.py): literal strings in, verdicts out.

The rule under test everywhere: an unreadable verdict is None with an error, never 0 and never a
clamped value; the last machine-readable line wins.
"""

from __future__ import annotations

import pytest

from core.parsers import (
    AspectVerdict,
    PairVerdict,
    RankVerdict,
    Verdict,
    error_code,
    parse_aspects,
    parse_pairwise,
    parse_ranking,
    parse_score,
    swap_winner,
)

# --------------------------------------------------------------------------------------------
# Pointwise scores
# --------------------------------------------------------------------------------------------

VALID_10 = [
    ("The answer is correct and clear.\nScore: 7", 7.0),
    ("Score: 7/10", 7.0),
    ("Score: 7 / 10", 7.0),
    ("**Score:** 7", 7.0),
    ("**Score: 8**", 8.0),
    ("- **Score**: 6", 6.0),
    ("### Score: 9", 9.0),
    ("Final score: 9", 9.0),
    ("Overall rating: 3", 3.0),
    ("score = 4", 4.0),
    ("Score (1-10): 8.5", 8.5),
    ("Score: 8.5", 8.5),
    ("Score: 10", 10.0),
    ("Score: 1", 1.0),
    ("Score: 8 out of 10", 8.0),
    ("Score: 7 because the code has one bug", 7.0),
    ("Good, but verbose. [[8]]", 8.0),
    ("[[ 8/10 ]]", 8.0),
    ("Reasoning done.\nScore: [[6]]", 6.0),
    ("Score:\n\n9", 9.0),                        # the number alone on a later line
    ("Score：5", 5.0),                            # full-width colon
    ("Score: ８", 8.0),                           # full-width digit
    ("Die Antwort ist gut – très bien, 很好 ✅\nScore: 9", 9.0),
]


@pytest.mark.parametrize("text,expected", VALID_10)
def test_valid_scores_on_1_to_10(text, expected):
    verdict = parse_score(text, 1, 10)
    assert verdict == Verdict(expected, verdict.rationale, None, verdict.warning)
    assert verdict.ok and verdict.error is None


def test_rating_out_of_5_on_a_5_point_scale():
    assert parse_score("Rating: 4 out of 5", 1, 5).score == 4.0
    assert parse_score("Helpful, on topic.\nScore: 5", 1, 5).score == 5.0


def test_rationale_is_the_text_before_the_last_score_line():
    v = parse_score("Rationale: The answer is right\nbut terse.\n\nScore: 6/10", 1, 10)
    assert v == Verdict(6.0, "The answer is right\nbut terse.", None, None)
    v = parse_score("Score: 6", 1, 10)
    assert v.rationale is None
    v = parse_score("Analyse: 日本語の説明です。\nScore: 9", 1, 10)
    assert v.rationale == "Analyse: 日本語の説明です。"


INVALID_10 = [
    # (text, error code, number that must not leak through as a score)
    ("", "empty"),
    ("   \n\t ", "empty"),
    (None, "empty"),
    ("The answer is accurate and well organis", "no_score"),          # truncated mid-line
    ("The answer is accurate.\nSco", "no_score"),                      # truncated inside the label
    ("The answer is accurate.\nScore:", "no_number"),                  # truncated after the label
    ("The answer is accurate.\nScore: ", "no_number"),
    ("The answer is good, I'd give it an eight.", "no_score"),         # missing score line
    ("I would give it a score of 8.", "no_score"),                     # prose is not a score line
    ("Scores: 5", "no_score"),
    ("asdf;lkj 0x00 ��� {{}} <|endoftext|>", "no_score"),              # garbage
    ("Score: N/A", "no_number"),
    ("Score: <1-10>", "no_number"),                                    # the format echoed back
    ("Score: 11", "out_of_range"),
    ("Score: 11/10", "out_of_range"),
    ("Score: 0", "out_of_range"),
    ("Score: 0/10", "out_of_range"),
    ("Score: -3", "out_of_range"),
    ("Score: −3", "out_of_range"),                                     # U+2212 minus
    ("[[11]]", "out_of_range"),
    ("Score: 7/5", "wrong_scale"),                                     # another scale: never rescaled
    ("Score: 9/1", "wrong_scale"),                                     # "9/10" cut off
    ("Score: 80%", "wrong_scale"),
    ("Score: 7-8", "ambiguous"),
    ("Score: 7 to 8", "ambiguous"),
]


@pytest.mark.parametrize("text,code", INVALID_10)
def test_unreadable_scores_are_none_with_an_error_never_zero(text, code):
    verdict = parse_score(text, 1, 10)
    assert verdict.score is None and not verdict.ok
    assert error_code(verdict.error) == code, verdict.error


def test_out_of_range_is_reported_not_clamped():
    assert parse_score("Score: 11", 1, 10).error == "out_of_range: 11 is outside the 1-10 scale"
    assert parse_score("Score: 0", 1, 5).error == "out_of_range: 0 is outside the 1-5 scale"
    assert parse_score("Score: 6", 1, 5).error == "out_of_range: 6 is outside the 1-5 scale"
    assert parse_score("Score: 7/10", 1, 5).error == "wrong_scale: 7/10 is not on the 1-5 scale"
    assert parse_score("Score: 4.5", 1, 5).score == 4.5


def test_two_conflicting_score_lines_the_last_wins_with_a_warning():
    text = "First pass.\nScore: 6\nOn reflection the proof has a gap.\n**Score:** 4"
    v = parse_score(text, 1, 10)
    assert v.score == 4.0
    assert v.rationale == "First pass.\nScore: 6\nOn reflection the proof has a gap."
    assert v.warning == "2 score lines (6, 4); the last one counts (4)"
    # the same number twice is no conflict
    assert parse_score("Score: 6\nScore: 6", 1, 10).warning is None
    # a bracket verdict after a score line is the later one
    assert parse_score("Score: 3\nso [[5]]", 1, 10).score == 5.0


def test_the_last_line_decides_even_when_it_is_unreadable():
    v = parse_score("Score: 7\nActually, let me reconsider.\nScore: 12", 1, 10)
    assert v.score is None and error_code(v.error) == "out_of_range"
    assert v.warning == "2 score lines (7, 12); the last one counts (12)"


def test_a_score_line_cut_off_after_a_valid_one_is_an_error():
    v = parse_score("Score: 7\nWait.\nScore:", 1, 10)
    assert v.score is None and error_code(v.error) == "no_number"


def test_error_code():
    assert error_code("out_of_range: 11 is outside the 1-10 scale") == "out_of_range"
    assert error_code(None) is None


# --------------------------------------------------------------------------------------------
# Aspects (UltraFeedback / Zephyr)
# --------------------------------------------------------------------------------------------

ZEPHYR = """Helpfulness rationale: Covers the question well.
Helpfulness score: 4
Honesty rationale: Appropriately confident.
Honesty score: 5
Instruction following rationale: Ignores the 50-word limit.
Instruction following score: 2
Truthfulness rationale: One wrong date.
Truthfulness score: 3"""


def test_aspects_all_four():
    v = parse_aspects(ZEPHYR)
    assert v.scores == {"helpfulness": 4.0, "honesty": 5.0, "instruction_following": 2.0, "truthfulness": 3.0}
    assert v.score == 3.5 and v.ok and v.error is None
    assert v.rationales == {"helpfulness": "Covers the question well.", "honesty": "Appropriately confident.",
                            "instruction_following": "Ignores the 50-word limit.",
                            "truthfulness": "One wrong date."}


def test_aspects_variants_and_a_rationale_that_starts_with_a_number():
    text = ("Helpfulness: 3 steps are missing\nHelpfulness: 2\n**Honesty score:** 5/5\n"
            "Instruction-following rating: 4\nTruthfulness score: 1")
    v = parse_aspects(text)
    assert v.scores == {"helpfulness": 2.0, "honesty": 5.0, "instruction_following": 4.0, "truthfulness": 1.0}
    assert v.rationales["helpfulness"] == "3 steps are missing"


def test_aspects_truncated_out_of_range_and_empty():
    truncated = parse_aspects(ZEPHYR.rsplit("\n", 1)[0] + "\nTruthfulness sc")
    assert truncated.scores["truthfulness"] is None and truncated.scores["honesty"] == 5.0
    assert truncated.score is None and not truncated.ok
    assert truncated.error == "truthfulness: no_score: no 'Truthfulness score: N' line"
    wrong = parse_aspects(ZEPHYR.replace("Honesty score: 5", "Honesty score: 7"))
    assert wrong.scores["honesty"] is None and wrong.score is None
    assert wrong.errors["honesty"] == "out_of_range: 7 is outside the 1-5 scale"
    empty = parse_aspects("")
    assert empty == AspectVerdict(dict.fromkeys(empty.scores), empty.rationales, empty.errors, empty.warnings)
    assert empty.score is None and error_code(empty.error) == "empty"
    garbage = parse_aspects("lorem ipsum")
    assert all(error_code(e) == "no_score" for e in garbage.errors.values())


# --------------------------------------------------------------------------------------------
# Pairwise
# --------------------------------------------------------------------------------------------

PAIRS = [
    ("Winner: A", "A"),
    ("Answer A misses the edge case.\n**Winner:** B", "B"),
    ("Winner: tie", "tie"),
    ("Winner: Tie.", "tie"),
    ("Winner: a tie", "tie"),            # the article is not answer A
    ("Winner: b", "B"),
    ("Winner: Answer A", "A"),
    ("Winner: Assistant B", "B"),
    ("Winner: (A)", "A"),
    ("Winner: A, because B is wrong", "A"),
    ("Better answer: B", "B"),
    ("Final verdict: [[A]]", "A"),
    ("Both are fine. [[C]]", "tie"),     # MT-Bench's tie
    ("[[B]]", "B"),
    ("Winner:\nB", "B"),
]


@pytest.mark.parametrize("text,winner", PAIRS)
def test_pairwise_valid(text, winner):
    v = parse_pairwise(text)
    assert v.winner == winner and v.error is None and v.ok


@pytest.mark.parametrize("text,code", [
    ("", "empty"),
    (None, "empty"),
    ("Answer A is more complete, while answer B", "no_score"),   # truncated
    ("Winner:", "no_number"),
    ("Winner: C", "ambiguous"),
    ("Verdict: Answer B is better than answer A", "ambiguous"),
    ("Winner: A and B", "ambiguous"),
    ("%%%% ####", "no_score"),
])
def test_pairwise_invalid(text, code):
    v = parse_pairwise(text)
    assert v.winner is None and error_code(v.error) == code, v.error


def test_pairwise_last_line_wins_and_rationale():
    v = parse_pairwise("A is shorter.\nWinner: A\nBut B is correct.\nWinner: B")
    assert v == PairVerdict("B", "A is shorter.\nWinner: A\nBut B is correct.", None,
                            "2 verdict lines (A, B); the last one counts")


def test_swapped_call_maps_back_to_the_original_order():
    # The swapped call showed the original B as "A": its "A" is the original B.
    assert swap_winner(parse_pairwise("Winner: A").winner) == "B"
    assert swap_winner(parse_pairwise("Winner: B").winner) == "A"
    assert swap_winner(parse_pairwise("Winner: tie").winner) == "tie"
    assert swap_winner(parse_pairwise("garbage").winner) is None


# --------------------------------------------------------------------------------------------
# Listwise
# --------------------------------------------------------------------------------------------

RANKINGS = [
    ("Answer 2 is the most precise.\nRanking: 2 > 1 > 3", [2, 1, 3]),
    ("**Ranking:** [2] > [1] > [3]", [2, 1, 3]),
    ("Ranking: Answer 3 > Answer 1 > Answer 2", [3, 1, 2]),
    ("Ranking: 2, 1, 3", [2, 1, 3]),
    ("Ranking: 2>1>3.", [2, 1, 3]),
    ("Ranking: 2 > 1 > 3 (3 is off-topic)", [2, 1, 3]),
    ("Final ranking: #3 > #2 > #1", [3, 2, 1]),
    ("[[3, 1, 2]]", [3, 1, 2]),
    ("Ranking: ２ > １ > ３", [2, 1, 3]),
]


@pytest.mark.parametrize("text,ranking", RANKINGS)
def test_listwise_valid(text, ranking):
    v = parse_ranking(text, 3)
    assert v.ranking == ranking and v.error is None


@pytest.mark.parametrize("text,code,detail", [
    ("Ranking: 2 > 1 >", "not_permutation", "3 missing"),          # truncated
    ("Ranking: 2 > 2 > 3", "not_permutation", "2 repeated; 1 missing"),
    ("Ranking: 2 > 1 > 4", "not_permutation", "4 not an answer number 1-3; 3 missing"),
    ("Ranking: 0 > 1 > 2", "not_permutation", "0 not an answer number 1-3; 3 missing"),
    ("Ranking: 1 > 2", "not_permutation", "3 missing"),
    ("Ranking: 4 > 3 > 2 > 1", "not_permutation", "4 not an answer number 1-3"),
    ("Ranking: 2 = 1 > 3", "ambiguous", "has a tie"),
    ("Ranking: two > one > three", "no_number", "could not read 'two'"),
    ("Ranking:", "no_number", "empty"),
    ("The second answer is best, then", "no_score", ""),
    ("", "empty", ""),
])
def test_listwise_invalid(text, code, detail):
    v = parse_ranking(text, 3)
    assert v.ranking is None and error_code(v.error) == code and detail in v.error, v.error


def test_listwise_last_line_wins():
    v = parse_ranking("Ranking: 2 > 1 > 3\nOn second thought:\nRanking: 1 > 2 > 3", 3)
    assert v == RankVerdict([1, 2, 3], "Ranking: 2 > 1 > 3\nOn second thought:", None,
                            "2 ranking lines (2 > 1 > 3; 1 > 2 > 3); the last one counts")


def test_listwise_needs_a_positive_k():
    with pytest.raises(ValueError):
        parse_ranking("Ranking: 1", 0)


# --------------------------------------------------------------------------------------------
# Templates and judge requests (pure: no model)
# --------------------------------------------------------------------------------------------

def test_templates_load_render_and_hash():
    from core import prompts

    assert set(prompts.available()) >= {"pointwise_10", "pointwise_5", "zephyr_aspects", "pairwise", "listwise"}
    t = prompts.load("pointwise_10")
    assert t.placeholders == {"instruction", "response"}
    assert len(t.hash) == 12 and t.hash == prompts.template_hash("pointwise_10")
    text = t.render(instruction="What costs $5 {x}?", response="It costs $$ ${a}.")
    assert "What costs $5 {x}?" in text and "It costs $$ ${a}." in text   # values inserted verbatim
    assert text.rstrip().endswith("Score: <1-10>")
    with pytest.raises(ValueError, match="missing"):
        t.render(instruction="q")
    with pytest.raises(ValueError, match="unexpected"):
        t.render(instruction="q", response="a", typo="x")
    with pytest.raises(ValueError):
        prompts.load("../etc/passwd")
    with pytest.raises(FileNotFoundError):
        prompts.load("no_such_template")


def test_every_judge_template_asks_for_a_line_its_parser_reads():
    from core import prompts

    assert parse_score(prompts.load("pointwise_10").text.replace("<1-10>", "7"), 1, 10).score == 7
    assert parse_score(prompts.load("pointwise_5").text.replace("<1-5>", "4"), 1, 5).score == 4
    assert parse_aspects(prompts.load("zephyr_aspects").text.replace("<1-5>", "3")).score == 3
    assert parse_ranking(prompts.load("listwise").text, 3).ranking == [2, 1, 3]
    assert parse_pairwise(prompts.load("pairwise").text).winner == "tie"   # the last form shown


def test_pointwise_requests():
    from core.judge import build_pointwise_requests

    convs = build_pointwise_requests([{"instruction": "Summarise.", "input": "The cat sat.", "response": "A cat sat."},
                                      {"instruction": "2+2?", "response": "4"}], "pointwise_5", system="Be fair.")
    assert len(convs) == 2
    assert convs[0][0] == {"role": "system", "content": "Be fair."}
    assert "Summarise.\n\nInput:\nThe cat sat." in convs[0][1]["content"]
    assert [m["role"] for m in convs[1]] == ["system", "user"] and "2+2?" in convs[1][1]["content"]
    with pytest.raises(ValueError, match="not pointwise"):
        build_pointwise_requests([], "pairwise")
    with pytest.raises(ValueError, match="response"):
        build_pointwise_requests([{"instruction": "x"}], "pointwise_10")


def _shown_first(conv, a: str, b: str) -> str:
    text = conv[-1]["content"]
    return "a" if text.index(a) < text.index(b) else "b"


def test_pairwise_requests_produce_both_orders():
    import random

    from core.judge import build_pairwise_requests

    pairs = [{"instruction": f"q{i}", "answer_a": f"ALPHA{i}", "answer_b": f"BETA{i}"} for i in range(20)]
    requests = build_pairwise_requests(pairs, random.Random(0))
    assert len(requests) == 40
    for i in range(20):
        mine = [r for r in requests if r.index == i]
        assert sorted(r.swapped for r in mine) == [False, True]
        for r in mine:
            assert _shown_first(r.conversation, f"ALPHA{i}", f"BETA{i}") == ("b" if r.swapped else "a")
            assert r.order == ("ba" if r.swapped else "ab")
    # rng decides which call of a pair comes first: not always the same one
    assert len({requests[2 * i].swapped for i in range(20)}) == 2
    single = build_pairwise_requests(pairs, 1, both_orders=False)
    assert len(single) == 20 and len({r.swapped for r in single}) == 2


def test_combine_pairwise_and_flip_rate():
    from core.judge import combine_pairwise, flip_rate

    A, B, T, X = (parse_pairwise(f"Winner: {w}") for w in ("A", "B", "tie", "?"))
    # the swapped call saw the original B as "A": "B" there means the original A won
    assert combine_pairwise(A, B) == ("A", False)
    assert combine_pairwise(B, A) == ("B", False)
    assert combine_pairwise(T, T) == ("tie", False)
    assert combine_pairwise(A, A) == ("tie", True)      # position bias: "first one wins" both times
    assert combine_pairwise(A, T) == ("tie", True)
    assert combine_pairwise(X, A) == (None, False)      # a failed parse gives no verdict
    rate = flip_rate([(A, B), (B, A), (A, A), (T, T), (X, A)])
    assert (rate.k, rate.n) == (1, 4)                   # the unparsed pair is left out


def test_listwise_request_shuffles_and_unshuffles():
    import random

    from core.judge import build_listwise_request, ranks_of_answers, unshuffle_ranking

    answers = ["zero", "one", "two", "three"]
    conv, perm = build_listwise_request("Which?", answers, random.Random(7))
    assert sorted(perm) == [0, 1, 2, 3]
    text = conv[-1]["content"]
    for j, i in enumerate(perm):
        assert f"[Answer {j + 1}]\n{answers[i]}\n" in text
    assert "all 4 answer numbers" in text
    # The judge ranks shown answers 1..k; map back to original indices, best first.
    assert unshuffle_ranking([3, 1, 4, 2], [2, 0, 3, 1]) == [3, 2, 1, 0]
    assert unshuffle_ranking([1, 2], [1, 0]) == [1, 0]
    assert ranks_of_answers([3, 2, 1, 0]) == [4, 3, 2, 1]
    with pytest.raises(ValueError):
        unshuffle_ranking([1, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError):
        build_listwise_request("q", ["only one"], 0)
    # the same seed gives the same order (lineage: the permutation is stored with the rows)
    assert build_listwise_request("q", answers, 5)[1] == build_listwise_request("q", answers, 5)[1]
