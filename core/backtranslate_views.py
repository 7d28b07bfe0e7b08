"""What the Backtranslation page shows (app_pages/14_Backtranslation.py), computed here so tests
call it directly: Humpback's candidates (document → generated instruction) beside their curator's
score, the counts a threshold k keeps (aggregate SQL, never a row per candidate), and how the
curator agrees with human accept/reject labels at k (precision and recall with Wilson intervals,
core.calibration). The paper found self-curation by a weak model noisy (precision 0.44 at M0), so
the page puts that number next to the slider."""

from __future__ import annotations

from dataclasses import dataclass

from core import calibration as calib
from core.backtranslate import CANDIDATE_ROLE

REVIEW_SOURCE = "backtranslation"


@dataclass(frozen=True)
class Curator:
    """One curator's ratings of a candidates dataset: judge model, rubric, scoring mode."""

    model: str
    rubric: str
    mode: str | None
    round: int
    n: int
    mean_score: float | None

    @property
    def label(self) -> str:
        mean = "" if self.mean_score is None else f", mean {self.mean_score:.2f}"
        return f"{self.model} · {self.rubric}{f' · {self.mode}' if self.mode else ''} (round {self.round}, " \
               f"{self.n} rated{mean})"

    def key(self) -> tuple[str, str, str | None]:
        return self.model, self.rubric, self.mode


def candidate_datasets(ws) -> list[dict]:
    """Datasets holding backtranslated candidates: name, candidates, documents."""
    return ws.store.candidate_datasets()


def curators(ws, dataset: str) -> list[Curator]:
    return [Curator(r["judge_model"], r["rubric"], r["mode"], int(r["round"]), int(r["n"]),
                    None if r["mean_score"] is None else float(r["mean_score"]))
            for r in ws.store.candidate_curators([dataset], CANDIDATE_ROLE)]


def counts_at(ws, dataset: str, curator: Curator, k: float) -> dict:
    """candidates, judged, kept (score ≥ k), kept_share, mean_score, near_k: one aggregate query."""
    c = ws.store.curation_counts([dataset], CANDIDATE_ROLE, curator.model, curator.rubric, curator.mode, k)
    c["kept_share"] = c["kept"] / c["judged"] if c["judged"] else None
    return c


def calibration_at(ws, dataset: str, curator: Curator, k: float, bootstrap: int = 200) -> calib.Calibration:
    """The curator's keep (score ≥ k) against the human labels on these candidates, with intervals."""
    labels = ws.store.candidate_labels([dataset], CANDIDATE_ROLE, curator.model, curator.rubric, curator.mode)
    population = ws.store.curation_score_counts([dataset], CANDIDATE_ROLE, curator.model, curator.rubric,
                                                curator.mode)
    population = population[population["score"].notna()] if len(population) else population
    return calib.calibrate([r["score"] for r in labels], [r["decision"] for r in labels], k,
                           population=population, n_judgments=int(population["n"].sum()) if len(population) else 0,
                           n_failed=0, bootstrap=bootstrap)


def page_of(ws, dataset: str, curator: Curator, min_score: float | None = None, page: int = 0,
            page_size: int = 10) -> list[dict]:
    """One page of candidates, best score first: title, instruction, document, score, decision."""
    return ws.store.candidate_page([dataset], CANDIDATE_ROLE, curator.model, curator.rubric, curator.mode,
                                   min_score=min_score, limit=page_size, offset=page * page_size)


def label(ws, response_id: str, decision: str, reviewer: str | None = None) -> str:
    """A human accept/reject on a candidate (its response: the pair as a whole)."""
    if decision not in ("accept", "reject"):
        raise ValueError(f"a candidate is accepted or rejected, not {decision!r}")
    return ws.review(response_id, decision, target_kind="response", reviewer=reviewer, source=REVIEW_SOURCE)


def calibration_lines(cal: calib.Calibration) -> dict[str, str]:
    """The page's precision and recall lines with their intervals."""
    def line(p: calib.Proportion, what: str) -> str:
        if not p.n:
            return f"n/a (no {what})"
        return f"{p.value:.2f} [{p.low:.2f}, {p.high:.2f}] ({p.k}/{p.n})"

    return {"precision": line(cal.precision, "labeled candidate at or above k"),
            "recall": line(cal.recall, "accepted label"), "sentence": cal.sentence()}


def empty_rounds(ws) -> list[dict]:
    """Humpback rounds whose curator kept nothing (the round says why in its metrics)."""
    out = []
    for run in ws.store.round_runs():
        if run.get("method") != "humpback":
            continue
        for row in ws.store.rounds(run["name"]):
            reason = (row.get("metrics") or {}).get("kept_none")
            if reason:
                out.append({"round": row["id"], "reason": reason})
    return out


def round_curation(ws) -> list[dict]:
    """Each finished Humpback round's curation: curator, k, candidates, kept, share, mean score."""
    out = []
    for run in ws.store.round_runs():
        if run.get("method") != "humpback":
            continue
        for row in ws.store.rounds(run["name"]):
            m = row.get("metrics") or {}
            if not m:
                continue
            out.append({"round": row["id"], "curator": m.get("curator"), "k": m.get("k"),
                        "candidates": m.get("candidates"), "kept": m.get("kept"), "kept share": m.get("kept_share"),
                        "curator mean score": m.get("curator_mean_score"), "model": row.get("model"),
                        "win rate": (m.get("evaluation") or {}).get("win_rate")})
    return out


def run_k(rounds: list[dict], dataset: str) -> float | None:
    """The k of the latest round of the run whose candidates dataset this is (`<run>-candidates`)."""
    found = [r["k"] for r in rounds if r["k"] is not None and f"{r['round'].split('/')[0]}-candidates" == dataset]
    return float(found[-1]) if found else None
