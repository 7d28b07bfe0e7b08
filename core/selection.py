"""The selection a user builds on the Explore page (and export, jobs, curation): a value type.

It is data, not SQL: the store turns it into a WHERE clause from named fragments with bind
parameters (core.store), so no user value ever enters SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExploreFilter:
    """What the Explore page (and export) selects. Empty lists and None mean 'no constraint'."""

    datasets: list[str] = field(default_factory=list)  # dataset names
    tasks: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    min_chars: int | None = None
    max_chars: int | None = None
    search: str = ""
    search_responses: bool = False
    review: str = "any"  # any | accepted | rejected | unreviewed
    ids: list[str] = field(default_factory=list)  # instruction ids (e.g. one sample's review queue)

    def __post_init__(self) -> None:
        if self.review not in ("any", "accepted", "rejected", "unreviewed"):
            raise ValueError(f"review must be any, accepted, rejected or unreviewed, not {self.review!r}")
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")
