"""What the Categories and Revisions pages show (app_pages/15_Categories.py, 16_Revisions.py),
computed here so it is unit-testable: category tables, nearest members, the 2-D embedding map
(PCA in numpy), saving an edit, revision pages, and the word-level diff of a draft and its
revision as safe HTML.

The diff's HTML is built from escaped words only: every piece of model text goes through
html.escape, and the only markup is ours (<span class="diff-ins"> / <span class="diff-del">),
then the whole fragment passes core.render.sanitize (nh3, the renderer's allow-list) too.
"""

from __future__ import annotations

import difflib
import html
import re

import numpy as np
import pandas as pd

from core import categories as categories_mod
from core import render
from core.judge import format_instruction

MAP_LIMIT = 2000  # points on the embedding map at most (the members' first N, oldest first)
DIFF_CLASS = "winnow-diff"
DIFF_STYLE = f"""
.{DIFF_CLASS} {{ line-height: 1.6; white-space: pre-wrap; overflow-wrap: anywhere; }}
.{DIFF_CLASS} .diff-ins {{ background: rgba(46, 160, 67, 0.25); text-decoration: none; }}
.{DIFF_CLASS} .diff-del {{ background: rgba(248, 81, 73, 0.25); text-decoration: line-through; }}
"""


def _clip(text, n: int = 120) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------------------------


def schemes(ws) -> list[str]:
    return [r["scheme"] for r in ws.store.category_schemes()]


def category_table(ws, scheme: str) -> pd.DataFrame:
    """One row per category: name, origin, members (seeds among them), mean similarity, criteria."""
    rows = [{"category": c["name"], "origin": c["origin"], "members": int(c["members"]), "seeds": int(c["seeds"]),
             "mean similarity": None if c["mean_similarity"] is None else round(float(c["mean_similarity"]), 3),
             "criteria": "; ".join(c["criteria"]), "description": c["description"]}
            for c in ws.store.categories(scheme)]
    return pd.DataFrame(rows, columns=["category", "origin", "members", "seeds", "mean similarity", "criteria",
                                       "description"])


def nearest_members(ws, category_id: str, k: int = 10) -> pd.DataFrame:
    """The category's k members most similar to its seeds, with similarity, source and task."""
    rows = [{"similarity": None if m["similarity"] is None else round(float(m["similarity"]), 3),
             "source": m["source"], "task": m["task"], "instruction": _clip(format_instruction(m["text"], m["input"]))}
            for m in ws.store.category_members(category_id, k)]
    return pd.DataFrame(rows, columns=["similarity", "source", "task", "instruction"])


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates on the two first principal components (SVD of the centred vectors);
    zeros for fewer than two points, and a zero second column when the data have rank 1."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        return np.zeros((x.shape[0] if x.ndim == 2 else 0, 2))
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return out if out.shape[1] == 2 else np.hstack([out, np.zeros((out.shape[0], 2 - out.shape[1]))])


def embedding_map_frame(ws, scheme: str, limit: int = MAP_LIMIT) -> pd.DataFrame:
    """x, y (PCA of the members' MiniLM vectors, cached in the catalog), category, task, text."""
    members = ws.store.scheme_members(scheme, limit)
    if not members:
        return pd.DataFrame(columns=["x", "y", "category", "task", "text"])
    texts = [format_instruction(m["text"], m["input"]) for m in members]
    xy = pca_2d(ws.embed(texts))
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "category": [m["category"] for m in members],
                         "task": [m["task"] for m in members], "text": [_clip(t, 100) for t in texts]})


def save_edit(ws, category_id: str, name: str, description: str, criteria: str) -> str | None:
    """Save a category's edit from the page's fields (criteria: one per line); the error
    message when it is refused (nothing saved), None when saved."""
    try:
        categories_mod.update_category(ws, category_id, name=name, description=description, criteria=criteria)
    except ValueError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------------------------
# Revisions
# --------------------------------------------------------------------------------------------


def revision_roles(ws) -> list[str]:
    return list(dict.fromkeys(role for role, _ in ws.store.revision_roles()))


def revisions_page(ws, role: str | None, page: int = 0, page_size: int = 10) -> tuple[list[dict], int]:
    """(one page of direct-mode revisions with their drafts and category criteria, total)."""
    rows = ws.store.revisions(role=role, limit=page_size, offset=page * page_size)
    cats: dict[str, dict | None] = {}
    for r in rows:
        cid = r["meta"].get("category_id")
        if cid not in cats:
            cats[cid] = ws.store.category(cid) if cid else None
        cat = cats[cid]
        r["category"] = cat["name"] if cat else r["meta"].get("category")
        r["criteria"] = cat["criteria"] if cat else []
        # The criteria may have been edited since: the hash says whether they are the ones used.
        r["criteria_current"] = bool(cat) and categories_mod.criteria_hash(cat["criteria"]) == r["meta"].get(
            "criteria_hash")
    return rows, ws.store.count_revisions(role=role)


# A word with the whitespace after it: lone spaces never "match" between two unrelated texts.
_TOKEN = re.compile(r"\S+\s*|\s+")


def diff_ops(old: str, new: str) -> list[tuple[str, str]]:
    """A word-level diff: (op, text) pieces with op 'equal', 'insert' or 'delete'. Words are
    compared without the whitespace after them (a word before a line break still matches) and
    shown with it; equal pieces are the new text's, so joining the equal and insert pieces gives
    `new` exactly, and the equal and delete pieces give the words of `old`."""
    a, b = _TOKEN.findall(old or ""), _TOKEN.findall(new or "")
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=[t.strip() for t in a], b=[t.strip() for t in b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.append(("equal", "".join(b[j1:j2])))
        else:
            if i2 > i1:
                out.append(("delete", "".join(a[i1:i2])))
            if j2 > j1:
                out.append(("insert", "".join(b[j1:j2])))
    return out


def diff_html(old: str, new: str) -> str:
    """The diff as safe HTML: escaped text, insertions and deletions in spans of our classes."""
    parts = []
    for op, text in diff_ops(old, new):
        escaped = html.escape(text)
        parts.append(escaped if op == "equal" else f'<span class="diff-{"ins" if op == "insert" else "del"}">'
                                                   f"{escaped}</span>")
    return render.sanitize(f'<div class="{DIFF_CLASS}">{"".join(parts)}</div>')


def diff_counts(old: str, new: str) -> dict:
    """Words inserted and deleted (what the page's caption says)."""
    counts = {"inserted": 0, "deleted": 0}
    for op, text in diff_ops(old, new):
        if op != "equal":
            counts["inserted" if op == "insert" else "deleted"] += len(text.split())
    return counts
