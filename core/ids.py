"""Content-hash ids: the same content always gets the same id, so re-imports are idempotent."""

from __future__ import annotations

import hashlib

ID_HEX_DIGITS = 24
_SEP = "\x1f"  # unit separator: cannot be confused with text joined by ordinary characters


def content_id(*parts: str) -> str:
    """A 24-hex-digit (96-bit) id from the parts, order-sensitive.

    SHA-256 because DuckDB has it too: the bulk importer computes the same ids in SQL
    (`left(sha256(concat_ws(chr(31), ...)), 24)`, see core/store/).
    """
    joined = _SEP.join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(joined).hexdigest()[:ID_HEX_DIGITS]
