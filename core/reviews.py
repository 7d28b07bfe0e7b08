"""Human reviews as a reviewer sees them: the current verdict of a target from its append-only
history (the latest decision and the latest edit win)."""

from __future__ import annotations


def current_verdict(reviews: list[dict], target_id: str) -> dict:
    """The latest decision and the latest edit of one target (reviews are append-only)."""
    mine = sorted((r for r in reviews if r["target_id"] == target_id), key=lambda r: r["created_at"])
    decision = next((r["decision"] for r in reversed(mine) if r["decision"]), None)
    edited = next((r["edited_text"] for r in reversed(mine) if r["edited_text"]), None)
    return {"decision": decision, "edited_text": edited, "n_reviews": len(mine)}


def describe_verdict(verdict: dict) -> str:
    state = {"accept": "accepted", "reject": "rejected", "tie": "a tie"}.get(verdict["decision"] or "", "not reviewed")
    if verdict["edited_text"]:
        state += ", edited"
    if verdict["n_reviews"]:
        state += f" ({verdict['n_reviews']} review{'s' if verdict['n_reviews'] > 1 else ''})"
    return state
