"""How well the built-in SmolLM2-135M judges the demo seed, in both scoring modes (a script, not a test).

data/seed.jsonl holds 168 instruction/response pairs, each with a human quality label in its
`quality` field (excellent / weak / wrong). Each pair is judged on the pointwise_5 rubric

- in probability mode (the expected 1-5 score from the judge's own label distribution), and
- in generate mode (reasoning, then a parsed `Score: N` line; greedy, max_tokens 128),

through the same functions a judge job uses (core.judge), and the script prints, per mode, the
parse rate (verdicts with a score) and the AUC of the score for excellent against weak + wrong
(over the targets with a score; ties count one half). The throughput benchmark judges the same
64 targets (a fixed seeded sample) in both modes and prints both wall times and their ratio. The
two modes alternate in chunks of 16 targets, so that other work on a shared machine slows both
alike (measured here: 64 probability verdicts took 332 s while other test suites ran, the next
104 took 78 s).

    .venv/bin/python bench/measure_judge_auc.py                  # all 168 in both modes
    .venv/bin/python bench/measure_judge_auc.py --generate-limit 0    # generate on the 64 only
    .venv/bin/python bench/measure_judge_auc.py --timing-only         # just the throughput line

One JSON line per result, like the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from core import judge  # noqa: E402
from core.judge_stage import generation_error  # noqa: E402
from core.llm.base import GenerationParams  # noqa: E402
from core.llm.registry import load_backend  # noqa: E402
from core.parsers import error_code  # noqa: E402

SEED_FILE = Path(__file__).resolve().parent.parent / "data" / "seed.jsonl"
MODEL = "smollm2-135m-instruct"
RUBRIC = "pointwise_5"
TIMED_TARGETS = 64
CHUNK = 16


def load_seed() -> list[dict]:
    rows = [json.loads(line) for line in SEED_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "response": r["output"],
             "excellent": r["quality"] == "excellent", "id": f"seed-{i}"} for i, r in enumerate(rows)]


def auc(scores: list[float | None], positive: list[bool]) -> tuple[float | None, int]:
    """Mann-Whitney AUC of the targets that have a score (ties count one half), and their number."""
    pos = [s for s, p in zip(scores, positive, strict=True) if s is not None and p]
    neg = [s for s, p in zip(scores, positive, strict=True) if s is not None and not p]
    if not pos or not neg:
        return None, len(pos) + len(neg)
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg)), len(pos) + len(neg)


def judge_probability(backend, items: list[dict]) -> list[dict]:
    conversations = judge.build_pointwise_requests(items, RUBRIC, mode="probability")
    results = backend.choice_logprobs(conversations, judge.labels_of(RUBRIC), prefill=judge.prefill_of(RUBRIC))
    return judge.probability_rows(RUBRIC, MODEL, [it["id"] for it in items], results)


def judge_generate(backend, items: list[dict], max_tokens: int) -> list[dict]:
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
    conversations = judge.build_pointwise_requests(items, RUBRIC)
    generations = [samples[0] for samples in backend.generate(conversations, params)]
    return judge.judgment_rows(RUBRIC, MODEL, [it["id"] for it in items], [g.text if g.ok else "" for g in generations],
                               params=params.to_dict(), call_errors=[generation_error(g) for g in generations])


def timed(fn, *args) -> tuple[list[dict], float]:
    start = time.perf_counter()
    rows = fn(*args)
    return rows, time.perf_counter() - start


def interleaved(backend, items: list[dict], max_tokens: int) -> tuple[list[dict], float, list[dict], float]:
    """Both modes on the same items, alternating chunk by chunk: (probability rows, seconds,
    generate rows, seconds)."""
    prob_rows, gen_rows, prob_s, gen_s = [], [], 0.0, 0.0
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        rows, seconds = timed(judge_probability, backend, chunk)
        prob_rows, prob_s = prob_rows + rows, prob_s + seconds
        rows, seconds = timed(judge_generate, backend, chunk, max_tokens)
        gen_rows, gen_s = gen_rows + rows, gen_s + seconds
        print(f"# {start + len(chunk)}/{len(items)} timed targets: probability {prob_s:.1f} s, "
              f"generate {gen_s:.1f} s", file=sys.stderr, flush=True)
    return prob_rows, prob_s, gen_rows, gen_s


def summarise(mode: str, rows: list[dict], items: list[dict], seconds: float) -> None:
    by_id = {r["target_id"]: r for r in rows}
    scores = [by_id[it["id"]]["score"] for it in items]
    value, n_scored = auc(scores, [it["excellent"] for it in items])
    confidences = [r["confidence"] for r in rows if r["confidence"] is not None]
    report("judge_auc", model=MODEL, rubric=RUBRIC, mode=mode, targets=len(items),
           scored=sum(s is not None for s in scores), parse_rate=round(n_scored / len(items), 3),
           parse_errors=dict(Counter(error_code(r["parse_error"]) for r in rows if r["parse_error"])),
           call_errors=sum(r["call_error"] is not None for r in rows),
           auc=None if value is None else round(value, 3), auc_over=n_scored,
           mean_confidence=round(sum(confidences) / len(confidences), 3) if confidences else None,
           seconds=round(seconds, 1), positives=sum(it["excellent"] for it in items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generate-limit", type=int, default=None,
                        help="judge only the 64 timed targets plus this many others in generate mode "
                             "(default: every pair)")
    parser.add_argument("--max-tokens", type=int, default=128, help="generate mode: tokens per verdict")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    parser.add_argument("--timing-only", action="store_true", help="only the throughput benchmark")
    args = parser.parse_args()

    items = load_seed()
    timed_ix = sorted(random.Random(0).sample(range(len(items)), TIMED_TARGETS))
    timed_items = [items[i] for i in timed_ix]
    timed_set = set(timed_ix)
    rest = [it for i, it in enumerate(items) if i not in timed_set]
    backend = load_backend({"name": MODEL, "backend": "hf", "path": f"builtin:{MODEL}", "extra": {"threads": args.threads}})
    try:
        prob_rows, prob_s, gen_rows, gen_s = interleaved(backend, timed_items, args.max_tokens)
        report("judge_throughput_probability_vs_generate", model=MODEL, rubric=RUBRIC, targets=TIMED_TARGETS,
               probability_s=round(prob_s, 1), generate_s=round(gen_s, 1),
               generate_max_tokens=args.max_tokens, ratio=round(gen_s / prob_s, 2),
               probability_targets_per_s=round(TIMED_TARGETS / prob_s, 3),
               generate_targets_per_s=round(TIMED_TARGETS / gen_s, 3), chunk=CHUNK)
        if args.timing_only:
            return

        more_prob, more_prob_s = timed(judge_probability, backend, rest)
        summarise("probability", prob_rows + more_prob, items, prob_s + more_prob_s)

        gen_rest = rest if args.generate_limit is None else rest[: max(0, args.generate_limit)]
        more_gen, more_gen_s = timed(judge_generate, backend, gen_rest, args.max_tokens) if gen_rest else ([], 0.0)
        judged = {r["target_id"] for r in gen_rows + more_gen}
        summarise("generate", gen_rows + more_gen, [it for it in items if it["id"] in judged], gen_s + more_gen_s)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
