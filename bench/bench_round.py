"""Wall time of TAPIR rounds on this machine (`recipes/tapir-tiny.yaml`: SmolLM2-135M teaches and
judges, tiny-random learns), with where the time goes: each step's wall time from the catalog's
round_steps (started → finished; a step without a job is a few queries).

    python bench/bench_round.py [ROUNDS]      # default 1; target: one round ≤ 5 minutes

It runs the real driver (`core.rounds.drive`) in a fresh temporary workspace, exactly what
`winnow round run recipes/tapir-tiny.yaml` does with the app closed."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from core import rounds  # noqa: E402
from core.workspace import Workspace  # noqa: E402

RECIPE = ROOT / "recipes" / "tapir-tiny.yaml"


def step_seconds(step: dict) -> float | None:
    if "seconds" in (step["outputs"] or {}):  # a step without a job times itself
        return step["outputs"]["seconds"]
    if step["finished_at"] is None or step["started_at"] is None:
        return None
    return (step["finished_at"] - step["started_at"]).total_seconds()


def main(n_rounds: int = 1) -> None:
    with tempfile.TemporaryDirectory(prefix="winnow-bench-round-") as tmp, Workspace(Path(tmp) / "ws") as ws:
        started = time.perf_counter()
        status = rounds.start_run(ws, RECIPE, n_rounds)
        status = rounds.drive(ws, status["name"], timeout=3600)
        total = time.perf_counter() - started
        for r in status["rounds"]:
            steps = {s["name"]: step_seconds(s) for s in r["steps"]}
            wall = (r["finished_at"] - r["created_at"]).total_seconds()
            slowest = sorted(((v, k) for k, v in steps.items() if v is not None), reverse=True)[:3]
            report("tapir_tiny_round", round=r["number"], wall_s=round(wall, 1), target_s=300,
                   met=wall <= 300, steps_s={k: None if v is None else round(v, 1) for k, v in steps.items()},
                   slowest=[f"{k} {v:.0f} s" for v, k in slowest],
                   evaluation=(r["metrics"] or {}).get("evaluation", {}).get("line"))
        report("tapir_tiny_run", rounds=n_rounds, wall_s=round(total, 1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
