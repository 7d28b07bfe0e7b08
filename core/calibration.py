"""How far to trust a judge: its scores against human accept/reject labels. Pure numpy/pandas.

DESIGN.md §6: beside every judge score the UI shows its parse-failure rate, order-flip rate,
precision/recall at the chosen threshold and Kendall τ with human ratings, each with a
confidence interval from the number of labels, and offers the samples whose labels would
narrow the interval most. Self-curation by a weak model is noisy (Humpback reports precision
0.44 for its seed model), so these numbers decide whether a threshold can be trusted.

Conventions:
- A target is *kept* when its score is ≥ the threshold, or ≤ it for a rubric where lower is
  better (`higher_is_better=False`: listwise ranks, 1 = best; `core.judge.higher_is_better`
  says which). A target whose verdict did not parse (score NaN/None) is not kept, exactly as the
  curation filter `score >= t` treats NULL, so precision and recall describe the filter as it
  will actually run. `kept_mask` and `kept_condition_sql` are that one rule for numpy and SQL.
- Labels: 1/True/'accept' = the human keeps it; 0/False/'reject' = the human drops it.
- Proportions carry a Wilson 95% interval (good at small n and near 0 or 1, unlike the normal
  approximation). Kendall τ-b carries a seeded percentile bootstrap interval, and the ROC AUC (the
  Mann–Whitney statistic, ties ½) one stratified by class.
- Trust (issue 12): a judge is *at chance* on the user's labels when its AUC interval includes 0.5
  or its τ interval includes 0, and "not yet known" with fewer than MIN_LABELS labels or
  MIN_PER_CLASS of either class; `judge_trust` says which, and about how many more labels would
  settle it. Pages and the CLI flag a judge at chance wherever its scores show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = [
    "AUC_METHOD", "Auc", "Calibration", "JudgeEvidence", "MIN_LABELS", "MIN_PER_CLASS", "MORE_LABELS_CAP",
    "Proportion", "Tau", "Trust", "Z95", "calibrate", "confusion", "judge_trust", "kendall_tau", "kendall_tau_b",
    "kept_condition_sql", "kept_mask", "kept_share", "parse_failure_rate", "proportion", "review_candidates",
    "roc_auc", "threshold_sweep", "trust_from", "to_labels", "wilson_interval",
]

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
AUC_METHOD = "bootstrap, stratified by class, percentile 95%"
_LABELS = {"accept": 1, "reject": 0, True: 1, False: 0}  # 1 and 0 (and 1.0) hash like True and False
# Above this many cells the contingency-table τ is replaced by the O(n²) pair count.
_MAX_TABLE_CELLS = 4_000_000


# --------------------------------------------------------------------------------------------
# Proportions with Wilson intervals
# --------------------------------------------------------------------------------------------

def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials. With n = 0 nothing is known: (0, 1)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    """k out of n, with a Wilson 95% interval; `value` is None when n = 0."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def half_width(self) -> float:
        """Half the interval's width: the "± 0.07" in a sentence (Wilson is not symmetric)."""
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        if not self.n:
            return "n/a (n = 0)"
        return f"{self.value:.2f} ± {self.half_width:.2f} ({self.k}/{self.n})"


def proportion(k: int, n: int, z: float = Z95) -> Proportion:
    low, high = wilson_interval(int(k), int(n), z)
    return Proportion(int(k), int(n), low, high)


def parse_failure_rate(n_failed: int, n_total: int) -> Proportion:
    """Share of verdicts that did not parse (stored with score NULL and a parse error)."""
    return proportion(n_failed, n_total)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def to_labels(labels: Iterable) -> np.ndarray:
    """1/0 from accept/reject, True/False or 1/0; anything else is an error, never a guess."""
    out = []
    for value in labels:
        key = value.item() if isinstance(value, np.generic) else value
        if isinstance(key, str):
            key = key.strip().lower()
        if key not in _LABELS:
            raise ValueError(f"a label must be accept/reject, 1/0 or True/False, not {value!r}")
        out.append(_LABELS[key])
    return np.asarray(out, dtype=np.int64)


def _scores(scores: Iterable) -> np.ndarray:
    """Scores as floats; None (an unparsed verdict) becomes NaN."""
    return np.asarray([np.nan if s is None else float(s) for s in scores], dtype=np.float64)


def _aligned(scores: Iterable, labels: Iterable) -> tuple[np.ndarray, np.ndarray]:
    s, y = _scores(scores), to_labels(labels)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels: they must be for the same targets")
    return s, y


def _population(population) -> tuple[np.ndarray, np.ndarray]:
    """(score values, counts) from scores (one per target) or a histogram with columns score, n."""
    if isinstance(population, pd.DataFrame):
        values = pd.to_numeric(population["score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return values, population["n"].to_numpy(dtype=np.int64)
    values = _scores(population)
    return values, np.ones(len(values), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Metrics at one threshold
# --------------------------------------------------------------------------------------------

def kept_mask(scores, threshold: float, higher_is_better: bool = True) -> np.ndarray:
    """Which scores the filter keeps: score >= threshold (or <= when lower is better); NaN/None
    (no parsed verdict) is never kept."""
    s = scores if isinstance(scores, np.ndarray) and scores.dtype == np.float64 else _scores(scores)
    if higher_is_better:
        return np.nan_to_num(s, nan=-np.inf) >= threshold
    return np.nan_to_num(s, nan=np.inf) <= threshold


def kept_condition_sql(higher_is_better: bool = True, column: str = "score") -> str:
    """The same rule as a SQL condition with one `?` for the threshold (NULL is not kept there either)."""
    if not column.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"column must be a plain column name, not {column!r}")
    return f"{column} {'>=' if higher_is_better else '<='} ?"


def confusion(scores: Iterable, labels: Iterable, threshold: float, higher_is_better: bool = True
              ) -> dict[str, int]:
    """tp/fp/fn/tn of the filter `score >= threshold` (or `<=`) against human labels (NaN = not kept)."""
    s, y = _aligned(scores, labels)
    kept = kept_mask(s, threshold, higher_is_better)
    return {
        "tp": int(np.sum(kept & (y == 1))),
        "fp": int(np.sum(kept & (y == 0))),
        "fn": int(np.sum(~kept & (y == 1))),
        "tn": int(np.sum(~kept & (y == 0))),
    }


def kept_share(population, threshold: float, higher_is_better: bool = True) -> Proportion:
    """Share of judged targets the threshold keeps (unparsed ones count as judged, not kept)."""
    values, counts = _population(population)
    return _kept(values, counts, threshold, higher_is_better)


def _kept(values: np.ndarray, counts: np.ndarray, threshold: float, higher_is_better: bool = True) -> Proportion:
    kept = kept_mask(values, threshold, higher_is_better)
    return proportion(int(counts[kept].sum()), int(counts.sum()))


# --------------------------------------------------------------------------------------------
# Kendall τ-b with a bootstrap interval
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tau:
    value: float   # NaN when undefined (fewer than 2 pairs, or one side constant)
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if math.isnan(self.value):
            return f"n/a (n = {self.n})"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}] (n = {self.n})"


def _tau_from_table(table: np.ndarray) -> float:
    """τ-b from a contingency table of x ranks (rows) by y ranks (columns).

    Concordant pairs: a cell times everything strictly below-right of it; discordant: times
    everything strictly below-left. Ties in x (same row) and y (same column) enter the
    denominator as in Kendall (1945): τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2))."""
    n = table.sum()
    rows, cols = table.shape
    # below_right[i, j] = sum of table[i+1:, j+1:]; below_left[i, j] = sum of table[i+1:, :j]
    suffix = table[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]  # sum of table[i:, j:]
    below_right = np.zeros_like(table)
    below_right[:-1, :-1] = suffix[1:, 1:]
    rows_below = table[::-1].cumsum(0)[::-1]                   # sum of table[i:, j]
    left = np.zeros_like(table)
    left[:-1, 1:] = rows_below[1:, :-1].cumsum(1)              # sum of table[i+1:, :j]
    concordant = float((table * below_right).sum())
    discordant = float((table * left).sum())
    n0 = n * (n - 1) / 2
    n1 = float((table.sum(1) * (table.sum(1) - 1) / 2).sum())
    n2 = float((table.sum(0) * (table.sum(0) - 1) / 2).sum())
    denom = math.sqrt(max(n0 - n1, 0) * max(n0 - n2, 0))
    return (concordant - discordant) / denom if denom > 0 else math.nan


def _tau_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """τ-b by counting pairs directly, in chunks (for data with too many distinct values)."""
    num = tx = ty = 0.0
    for start in range(0, len(x), 1024):
        dx = np.sign(x[start:start + 1024, None] - x[None, :])
        dy = np.sign(y[start:start + 1024, None] - y[None, :])
        num += float((dx * dy).sum())
        tx += float((dx != 0).sum())
        ty += float((dy != 0).sum())
    return num / math.sqrt(tx * ty) if tx > 0 and ty > 0 else math.nan


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inverse = np.unique(values, return_inverse=True)
    return inverse.ravel(), len(uniq)


def kendall_tau_b(x: Iterable, y: Iterable) -> float:
    """Kendall's τ-b (ties handled); pairs with a NaN on either side are left out."""
    xa, ya = _scores(x), _scores(y)
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    if len(xa) < 2:
        return math.nan
    xi, ux = _codes(xa)
    yi, uy = _codes(ya)
    if ux * uy > _MAX_TABLE_CELLS:
        return _tau_pairs(xa, ya)
    table = np.bincount(xi * uy + yi, minlength=ux * uy).reshape(ux, uy).astype(np.float64)
    return _tau_from_table(table)


def kendall_tau(scores: Iterable, ratings: Iterable, bootstrap: int = 1000, seed: int = 0,
                level: float = 0.95) -> Tau:
    """τ-b between judge scores and human ratings, with a percentile bootstrap interval
    (resampling targets with replacement, seeded, so the same data gives the same interval)."""
    xa, ya = _scores(scores), _scores(ratings)
    if len(xa) != len(ya):
        raise ValueError(f"{len(xa)} scores but {len(ya)} ratings")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    n = len(xa)
    value = kendall_tau_b(xa, ya)
    if math.isnan(value) or bootstrap <= 0:
        return Tau(value, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    xi, ux = _codes(xa)
    yi, uy = _codes(ya)
    small = ux * uy <= _MAX_TABLE_CELLS
    draws = np.empty(bootstrap)
    for b in range(bootstrap):
        idx = rng.integers(0, n, n)
        if small:
            table = np.bincount(xi[idx] * uy + yi[idx], minlength=ux * uy).reshape(ux, uy)
            draws[b] = _tau_from_table(table.astype(np.float64))
        else:
            draws[b] = _tau_pairs(xa[idx], ya[idx])
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return Tau(value, math.nan, math.nan, n)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Tau(value, float(low), float(high), n)


# --------------------------------------------------------------------------------------------
# ROC AUC with a stratified bootstrap interval
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Auc:
    """How often the judge ranks an accepted target above a rejected one (ties count ½): 1 is a
    perfect judge, 0.5 a coin, 0 a perfectly inverted one. NaN without both classes."""

    value: float
    low: float
    high: float
    n_accept: int
    n_reject: int

    @property
    def n(self) -> int:
        return self.n_accept + self.n_reject

    def __str__(self) -> str:
        if math.isnan(self.value):
            return f"n/a ({self.n_accept} accept, {self.n_reject} reject)"
        if math.isnan(self.low):
            return f"{self.value:.2f} (n = {self.n})"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}] (n = {self.n})"


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC from per-level counts of positives and negatives (levels in score order;
    the last axis is the level, so a stack of bootstrap draws is one call)."""
    below = np.cumsum(neg, axis=-1) - neg          # negatives strictly below each level
    wins = (pos * (below + 0.5 * neg)).sum(axis=-1)
    return wins / (pos.sum(axis=-1) * neg.sum(axis=-1))


def roc_auc(scores: Iterable, labels: Iterable, higher_is_better: bool = True, bootstrap: int = 1000,
            seed: int = 0, level: float = 0.95) -> Auc:
    """ROC AUC of judge scores against accept (1) / reject (0) labels, the Mann–Whitney U over
    n_accept · n_reject, ties counting ½. A lower-is-better score (ranks) agrees when lower, so it
    is negated: the AUC keeps meaning "agreement" in both directions. Targets without a parsed
    score are left out (their rank is unknown).

    The interval is a seeded percentile bootstrap stratified by class: accepts and rejects are
    resampled separately, each keeping its count, so no draw loses a class (as an unstratified
    one can at small n) and the same data always gives the same interval."""
    s, y = _aligned(scores, labels)
    keep = ~np.isnan(s)
    s, y = (s if higher_is_better else -s)[keep], y[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return Auc(math.nan, math.nan, math.nan, n_pos, n_neg)
    codes, k = _codes(s)
    pos_codes, neg_codes = codes[y == 1], codes[y == 0]
    value = float(_auc_from_counts(np.bincount(pos_codes, minlength=k), np.bincount(neg_codes, minlength=k)))
    if bootstrap <= 0:
        return Auc(value, math.nan, math.nan, n_pos, n_neg)
    rng = np.random.default_rng(seed)
    draws = np.empty(bootstrap)
    chunk = max(1, 2_000_000 // max(k, n_pos, n_neg))  # draws per vectorised step: bounded memory
    for start in range(0, bootstrap, chunk):
        b = min(chunk, bootstrap - start)
        offsets = np.arange(b)[:, None] * k
        pos = np.bincount((pos_codes[rng.integers(0, n_pos, (b, n_pos))] + offsets).ravel(), minlength=b * k)
        neg = np.bincount((neg_codes[rng.integers(0, n_neg, (b, n_neg))] + offsets).ravel(), minlength=b * k)
        draws[start:start + b] = _auc_from_counts(pos.reshape(b, k), neg.reshape(b, k))
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Auc(value, float(low), float(high), n_pos, n_neg)


# --------------------------------------------------------------------------------------------
# Trust: is the judge better than chance on the user's own labels?
# --------------------------------------------------------------------------------------------

MIN_LABELS = 10       # below this, a verdict on the judge is "not yet known", whatever the interval says
MIN_PER_CLASS = 3     # ... and with fewer accepts or rejects: 1 reject among 9 accepts says nothing
MORE_LABELS_CAP = 1000  # "more than 1000 more labels": the judge is at chance or as good as


@dataclass(frozen=True)
class Trust:
    """Whether a judge beats chance on the user's own accept/reject labels (threshold-free).

    at_chance: the AUC interval includes 0.5 or the Kendall τ interval includes 0 (issue 12's
    definition), once there are enough labels to say (`undecided` is empty). inverted: the AUC
    interval lies below 0.5, the scores run against the labels. more_labels: about how many more
    labels (in the same accept/reject mix) would settle it, since an interval's half-width shrinks
    like 1/√n: n_needed ≈ n · (half_width / |effect|)²; None when already settled; capped
    (`more_labels_capped`) when the effect is too near chance for any count to settle it."""

    n_labels: int            # labeled targets with a parsed score (what the numbers stand on)
    n_accept: int
    n_reject: int
    auc: Auc
    kendall: Tau
    undecided: tuple[str, ...] = ()   # why it is not yet known; empty once enough labels exist
    more_labels: int | None = None
    more_labels_capped: bool = False
    n_unscored: int = 0      # labeled targets whose verdict did not parse (left out)

    @property
    def known(self) -> bool:
        return not self.undecided

    @property
    def at_chance(self) -> bool:
        return self.known and (_includes(self.auc.low, self.auc.high, 0.5)
                               or _includes(self.kendall.low, self.kendall.high, 0.0))

    @property
    def inverted(self) -> bool:
        return self.known and not self.at_chance and self.auc.high < 0.5

    @property
    def status(self) -> str:
        """unknown | at_chance | inverted | better: what a page's flag shows."""
        if not self.known:
            return "unknown"
        return "at_chance" if self.at_chance else "inverted" if self.inverted else "better"

    @property
    def flagged(self) -> bool:
        """Worth a warning wherever the judge's scores show: no better than chance, or worse."""
        return self.status in ("at_chance", "inverted")

    def _more(self) -> str:
        if self.more_labels is None:
            return ""
        if self.more_labels_capped:
            return f"more than {self.more_labels:,} more labels would be needed to tell it from chance"
        return f"about {self.more_labels:,} more label{'s' if self.more_labels != 1 else ''} would settle it"

    def sentence(self) -> str:
        """One line for a flag, e.g. "At chance on your 24 labels: AUC 0.55 [0.31, 0.78] includes
        0.5 — about 180 more labels would settle it." """
        labels = f"{self.n_labels} label{'s' if self.n_labels != 1 else ''}"
        if not self.known:
            mix = f" ({self.n_accept} accept, {self.n_reject} reject)" if self.n_labels else ""
            if self.more_labels:
                short = [f"{k} {name}{'s' if k != 1 else ''}" for k, name in
                         ((MIN_PER_CLASS - self.n_accept, "accept"), (MIN_PER_CLASS - self.n_reject, "reject")) if k > 0]
                need = (f"it takes at least {MIN_LABELS}, with {MIN_PER_CLASS} of each kind — label at least "
                        f"{self.more_labels} more" + (f", {' and '.join(short)} among them" if short else ""))
            else:
                need = "; ".join(self.undecided)
            return f"Not yet known whether this judge beats chance: {labels}{mix}; {need}."
        auc = f"AUC {self.auc.value:.2f} [{self.auc.low:.2f}, {self.auc.high:.2f}]"
        if self.status == "better":
            return f"Better than chance: {auc} on {labels}."
        if self.status == "inverted":
            return (f"Worse than chance on your {labels}: {auc} is below 0.5 — its scores run against "
                    "your labels (a reversed rubric or a broken prompt?).")
        if _includes(self.auc.low, self.auc.high, 0.5):
            why = f"{auc} includes 0.5"
        else:
            tau = self.kendall
            why = f"Kendall τ {tau.value:.2f} [{tau.low:.2f}, {tau.high:.2f}] includes 0 ({auc})"
        return f"At chance on your {labels}: {why} — {self._more()}."

    def as_dict(self) -> dict:
        return {
            "status": self.status, "at_chance": self.at_chance, "inverted": self.inverted, "known": self.known,
            "n_labels": self.n_labels, "n_accept": self.n_accept, "n_reject": self.n_reject,
            "n_unscored": self.n_unscored,
            "auc": {"value": _num(self.auc.value), "low": _num(self.auc.low), "high": _num(self.auc.high)},
            "kendall_tau": {"value": _num(self.kendall.value), "low": _num(self.kendall.low),
                            "high": _num(self.kendall.high), "n": self.kendall.n},
            "undecided": list(self.undecided), "more_labels": self.more_labels,
            "more_labels_capped": self.more_labels_capped, "sentence": self.sentence(),
        }


def _num(x: float) -> float | None:
    """NaN as None, so JSON output stays valid JSON."""
    return None if x is None or math.isnan(x) else float(x)


def _includes(low: float, high: float, point: float) -> bool:
    """Whether [low, high] contains point; an interval that could not be computed (NaN) says nothing."""
    return not (math.isnan(low) or math.isnan(high)) and low <= point <= high


def _needed(n: int, value: float, low: float, high: float, chance: float) -> float | None:
    """Total labels at which the interval would stop including `chance`, if the estimate stays put:
    the half-width on chance's side shrinks like 1/√n. None when the interval excludes it already
    (or is not known); inf when the estimate sits on chance itself."""
    if not _includes(low, high, chance) or math.isnan(value):
        return None
    effect = abs(value - chance)
    half = (value - low) if value >= chance else (high - value)
    if effect < 1e-9:
        return math.inf
    return n * (half / effect) ** 2


def judge_trust(scores: Iterable, labels: Iterable, higher_is_better: bool = True, bootstrap: int = 1000,
                seed: int = 0) -> Trust:
    """A judge's Trust from its scores on the labeled targets (None/NaN: unparsed, left out) and
    the human labels (accept/reject, 1/0)."""
    s, y = _aligned(scores, labels)
    parsed = ~np.isnan(s)
    s, y = s[parsed], y[parsed]
    auc = roc_auc(s, y, higher_is_better, bootstrap=bootstrap, seed=seed)
    tau = kendall_tau(s if higher_is_better else -s, y, bootstrap=bootstrap, seed=seed)
    return trust_from(auc, tau, n_unscored=int((~parsed).sum()))


def trust_from(auc: Auc, tau: Tau, n_unscored: int = 0) -> Trust:
    """The Trust that an AUC and a τ over the same labeled targets call for (Calibration.trust
    reuses the ones it computed, so a page pays for one bootstrap of each)."""
    n, n_acc, n_rej = auc.n, auc.n_accept, auc.n_reject
    undecided = []
    if n < MIN_LABELS:
        undecided.append(f"at least {MIN_LABELS} labels are needed")
    for count, name in ((n_acc, "accept"), (n_rej, "reject")):
        if count < MIN_PER_CLASS:
            undecided.append(f"{'no' if count == 0 else f'only {count}'} {name}{'s' if count != 1 else ''} "
                             f"(at least {MIN_PER_CLASS} are needed)")
    if n >= MIN_LABELS and not undecided and (math.isnan(auc.low) or math.isnan(auc.high)):
        undecided.append("no confidence interval was computed (bootstrap off)")
    if undecided:
        short = max(0, MIN_PER_CLASS - n_acc) + max(0, MIN_PER_CLASS - n_rej)
        return Trust(n, n_acc, n_rej, auc, tau, tuple(undecided), max(MIN_LABELS - n, short), False, n_unscored)
    needs = [x for x in (_needed(n, auc.value, auc.low, auc.high, 0.5),
                         _needed(n, tau.value, tau.low, tau.high, 0.0)) if x is not None]
    more, capped = None, False
    if needs:
        extra = max(needs) - n
        capped = extra > MORE_LABELS_CAP
        more = MORE_LABELS_CAP if capped else max(1, math.ceil(extra))
    return Trust(n, n_acc, n_rej, auc, tau, (), more, capped, n_unscored)


# --------------------------------------------------------------------------------------------
# Calibration at a threshold, sweeps, and what to review next
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    threshold: float
    n_labels: int            # targets with a judge verdict and a human accept/reject
    tp: int
    fp: int
    fn: int
    tn: int
    precision: Proportion    # of the labeled targets kept, the share humans accept
    recall: Proportion       # of the labeled targets humans accept, the share kept
    agreement: Proportion    # share of labeled targets where keep/drop matches the human
    kept: Proportion         # share of all judged targets the threshold keeps
    parse_failures: Proportion  # share of verdicts that did not parse
    kendall: Tau             # judge score vs human label, over labeled targets with a score
    higher_is_better: bool = True  # False: kept means score <= threshold (ranks)
    auc: Auc | None = None   # ROC AUC of the score vs the labels (threshold-free), over the same targets

    def trust(self) -> Trust:
        """Whether the judge beats chance on these labels, from this calibration's AUC and τ."""
        auc = self.auc if self.auc is not None else Auc(math.nan, math.nan, math.nan, 0, 0)
        return trust_from(auc, self.kendall, n_unscored=self.n_labels - auc.n)

    def sentence(self) -> str:
        """E.g. "score ≥ 4 keeps 61% at precision 0.82 ± 0.07 on 48 labels"."""
        head = f"score {'≥' if self.higher_is_better else '≤'} {self.threshold:g}"
        if self.kept.n == 0:
            return f"{head}: nothing has been judged yet"
        head += f" keeps {_percent(self.kept.value)}"
        labels = f"{self.n_labels} label{'s' if self.n_labels != 1 else ''}"
        if self.n_labels == 0:
            return f"{head}; no human labels yet to say at what precision"
        if self.precision.n == 0:
            side = "above" if self.higher_is_better else "below"
            return f"{head}; none of the {labels} is at or {side} it, so precision is unknown"
        return f"{head} at precision {self.precision.value:.2f} ± {self.precision.half_width:.2f} on {labels}"

    def as_dict(self) -> dict:
        def p(x: Proportion) -> dict:
            return {"value": x.value, "low": x.low, "high": x.high, "k": x.k, "n": x.n}
        return {
            "threshold": self.threshold, "higher_is_better": self.higher_is_better, "n_labels": self.n_labels,
            "confusion": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
            "precision": p(self.precision), "recall": p(self.recall), "agreement": p(self.agreement),
            "kept": p(self.kept), "parse_failures": p(self.parse_failures),
            "kendall_tau": {"value": self.kendall.value, "low": self.kendall.low, "high": self.kendall.high,
                            "n": self.kendall.n},
            "auc": None if self.auc is None else {
                "value": _num(self.auc.value), "low": _num(self.auc.low), "high": _num(self.auc.high),
                "n_accept": self.auc.n_accept, "n_reject": self.auc.n_reject, "method": AUC_METHOD},
            "sentence": self.sentence(),
        }


def _percent(x: float | None) -> str:
    if x is None:
        return "n/a"
    if 0 < x < 0.005:
        return "<1%"
    if 0.995 < x < 1:
        return ">99%"
    return f"{100 * x:.0f}%"


def calibrate(scores: Iterable, labels: Iterable, threshold: float, *, population=None,
              n_judgments: int | None = None, n_failed: int | None = None,
              bootstrap: int = 1000, seed: int = 0, higher_is_better: bool = True) -> Calibration:
    """A judge against human labels at one threshold (kept: score >= threshold, or <= it when
    lower is better).

    scores, labels: one entry per labeled target (score None/NaN where the verdict did not parse).
    population: every judged target's score (or a histogram DataFrame with columns score, n) for
    the kept share; defaults to the labeled targets. n_judgments / n_failed: verdict counts for
    the parse-failure rate; default to the population's targets and its NaN scores."""
    s, y = _aligned(scores, labels)
    c = confusion(s, y, threshold, higher_is_better)
    pop = s if population is None else population
    if n_judgments is None or n_failed is None:
        values, counts = _population(pop)
        n_judgments = int(counts.sum())
        n_failed = int(counts[np.isnan(values)].sum())
    return Calibration(
        threshold=float(threshold),
        n_labels=len(y),
        precision=proportion(c["tp"], c["tp"] + c["fp"]),
        recall=proportion(c["tp"], c["tp"] + c["fn"]),
        agreement=proportion(c["tp"] + c["tn"], len(y)),
        kept=kept_share(pop, threshold, higher_is_better),
        parse_failures=parse_failure_rate(n_failed, n_judgments),
        # τ against accept = 1: a lower-is-better score agrees when it is negatively correlated,
        # so it is negated here and τ keeps meaning "agreement" for both directions.
        kendall=kendall_tau(s if higher_is_better else -s, y, bootstrap=bootstrap, seed=seed),
        higher_is_better=bool(higher_is_better),
        auc=roc_auc(s, y, higher_is_better, bootstrap=bootstrap, seed=seed),
        **c,
    )


@dataclass(frozen=True)
class JudgeEvidence:
    """What calibration needs about one judge and rubric, none of it depending on the threshold:
    fetch it once (a page caches it) and move the threshold slider at the cost of numpy only."""

    target_ids: list[str]      # labeled targets
    scores: list[float | None]  # their judge scores (None: no verdict on it parsed)
    labels: list[int]           # their human labels, 1 accept / 0 reject
    population: pd.DataFrame    # every judged target: columns score (NaN: unparsed), n
    n_judgments: int            # verdicts, for the parse-failure rate
    n_failed: int
    higher_is_better: bool = True  # the rubric's direction (core.judge.higher_is_better)

    def calibrate(self, threshold: float, bootstrap: int = 1000, seed: int = 0) -> Calibration:
        return calibrate(self.scores, self.labels, threshold, population=self.population,
                         n_judgments=self.n_judgments, n_failed=self.n_failed, bootstrap=bootstrap, seed=seed,
                         higher_is_better=self.higher_is_better)

    def trust(self, bootstrap: int = 1000, seed: int = 0) -> Trust:
        """Whether this judge beats chance on the labels (no threshold involved)."""
        return judge_trust(self.scores, self.labels, self.higher_is_better, bootstrap=bootstrap, seed=seed)

    def sweep(self, thresholds: Iterable[float] | None = None) -> pd.DataFrame:
        return threshold_sweep(self.scores, self.labels, thresholds, population=self.population,
                               higher_is_better=self.higher_is_better)


SWEEP_COLUMNS = [
    "threshold", "kept_share", "n_kept", "n_labels",
    "precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high",
    "agreement", "agreement_low", "agreement_high",
]


def threshold_sweep(scores: Iterable, labels: Iterable, thresholds: Iterable[float] | None = None,
                    population=None, higher_is_better: bool = True) -> pd.DataFrame:
    """One row per threshold (default: every distinct parsed score), for a precision/recall/kept
    plot with interval bands. Metrics with no labels to stand on are NaN."""
    s, y = _aligned(scores, labels)
    pop = s if population is None else population
    values, counts = _population(pop)
    if thresholds is None:
        both = np.concatenate([values, s])
        thresholds = np.unique(both[~np.isnan(both)])
    rows = []
    for t in thresholds:
        c = confusion(s, y, float(t), higher_is_better)
        kept = _kept(values, counts, float(t), higher_is_better)
        row = {"threshold": float(t), "kept_share": kept.value if kept.n else np.nan, "n_kept": kept.k,
               "n_labels": len(y)}
        for name, k, n in (("precision", c["tp"], c["tp"] + c["fp"]), ("recall", c["tp"], c["tp"] + c["fn"]),
                           ("agreement", c["tp"] + c["tn"], len(y))):
            p = proportion(k, n)
            row[name] = p.value if n else np.nan
            row[f"{name}_low"], row[f"{name}_high"] = (p.low, p.high) if n else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def review_candidates(scores: Mapping[str, float | None] | pd.Series, labels: Mapping | Iterable[str],
                      threshold: float, k: int = 20, higher_is_better: bool = True) -> pd.DataFrame:
    """The k unlabeled targets nearest the threshold: where the judge is least sure and a human
    label most changes precision and recall. Ties: kept side first (each of those labels adds to
    the precision count), then target id (a content hash: a fair shuffle that stays put)."""
    if k < 0:
        raise ValueError(f"k must be non-negative, not {k}")
    series = scores if isinstance(scores, pd.Series) else pd.Series(dict(scores), dtype=object)
    labeled = set(labels.keys() if isinstance(labels, Mapping) else labels)
    frame = pd.DataFrame({"target_id": series.index.astype(str),
                          "score": pd.to_numeric(series.to_numpy(), errors="coerce")})
    frame = frame[frame["score"].notna() & ~frame["target_id"].isin(labeled)].copy()
    frame["distance"] = (frame["score"] - threshold).abs()
    frame["kept"] = kept_mask(frame["score"].to_numpy(dtype=np.float64), threshold, higher_is_better)
    frame = frame.sort_values(["distance", "kept", "target_id"], ascending=[True, False, True], kind="stable")
    return frame.head(k).reset_index(drop=True)
