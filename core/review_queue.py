"""The review queue: one record at a time, from a filter, a snapshot or a judge's suggestions.

A queue is a frozen list of review targets (a response, an instruction without responses, or a
preference pair), built once from its source so progress ("12 done, 8 left") counts over a
fixed set; a target is done when it has a stored decision. `QueueSource` is the value that
names a queue: pages link to the Review page with `source.to_query()` as query parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from core.selection import ExploreFilter

SOURCE_KINDS = ("filter", "snapshot", "judge")
DEFAULT_SIZE = {"filter": 50, "snapshot": 50, "judge": 20}
MAX_SIZE = 1000


@dataclass(frozen=True)
class QueueSource:
    """Where a queue's records come from.

    filter: the instructions an ExploreFilter matches; snapshot: a snapshot's members; judge:
    the unlabeled targets of one judge and rubric nearest a threshold (the labels that narrow
    the calibration interval most, DESIGN.md §6)."""

    kind: str
    filter: ExploreFilter = field(default_factory=ExploreFilter)
    snapshot: str | None = None
    judge_model: str | None = None
    rubric: str | None = None
    threshold: float | None = None
    size: int | None = None  # None: DEFAULT_SIZE[kind]

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"queue source must be one of {', '.join(SOURCE_KINDS)}, not {self.kind!r}")
        if self.kind == "snapshot" and not self.snapshot:
            raise ValueError("a snapshot queue needs a snapshot name")
        if self.kind == "judge" and (not self.judge_model or not self.rubric or self.threshold is None):
            raise ValueError("a judge queue needs a judge model, a rubric and a threshold")
        if self.size is not None and not 1 <= int(self.size) <= MAX_SIZE:
            raise ValueError(f"queue size must be between 1 and {MAX_SIZE}, not {self.size}")

    @property
    def n(self) -> int:
        return int(self.size) if self.size is not None else DEFAULT_SIZE[self.kind]

    def to_query(self) -> dict[str, str]:
        """Query parameters for a link to the Review page (strings only)."""
        out = {"source": self.kind}
        if self.kind == "filter" and self.filter != ExploreFilter():
            out["filter"] = json.dumps(asdict(self.filter), sort_keys=True, separators=(",", ":"))
        if self.kind == "snapshot":
            out["snapshot"] = str(self.snapshot)
        if self.kind == "judge":
            out |= {"judge": str(self.judge_model), "rubric": str(self.rubric), "threshold": f"{self.threshold:g}"}
        if self.size is not None:
            out["size"] = str(int(self.size))
        return out

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> QueueSource:
        """The inverse of to_query; a ValueError says what is wrong with a hand-edited URL."""
        kind = params.get("source", "filter")
        try:
            flt = ExploreFilter(**json.loads(params["filter"])) if params.get("filter") else ExploreFilter()
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the filter in the link is not a valid Explore filter: {exc}") from None
        try:
            threshold = float(params["threshold"]) if params.get("threshold") not in (None, "") else None
            size = int(params["size"]) if params.get("size") not in (None, "") else None
        except ValueError:
            raise ValueError("threshold must be a number and size a whole number") from None
        return cls(kind=kind, filter=flt, snapshot=params.get("snapshot") or None,
                   judge_model=params.get("judge") or None, rubric=params.get("rubric") or None,
                   threshold=threshold, size=size)

    def tag(self) -> str:
        """What a review made from this queue stores as its source."""
        return f"queue:{self.kind}"
