"""Model backends behind one interface (see base.py): hf (transformers), vllm (offline engine),
openai (any OpenAI-compatible server), and the registry of named model specs.

Importing this package is cheap: torch, transformers and vllm load only with a backend.
"""

from core.llm.base import Backend, Generation, GenerationParams, ScoreResult
from core.llm.registry import BUILTIN_SPECS, ModelSpec, builtin_specs, get_builtin, load_backend

__all__ = ["Backend", "Generation", "GenerationParams", "ScoreResult", "ModelSpec", "BUILTIN_SPECS",
           "builtin_specs", "get_builtin", "load_backend"]
