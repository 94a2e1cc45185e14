import pytest

from promptseg_cli.model.prompts import CANONICAL_PROMPTS, UnknownPromptError, prompt_index, resolve_prompt


@pytest.mark.parametrize("text", ["nuclei", "Nucleus", "cell nuclei", "nuclear segmentation", "segment nuclei", "  DAPI "])
def test_nuclei_synonyms(text):
    assert resolve_prompt(text, use_embedding=False) == "nuclei"


@pytest.mark.parametrize("text", ["cells", "cell", "whole cell", "whole-cell", "cell segmentation", "cytoplasm"])
def test_cell_synonyms(text):
    assert resolve_prompt(text, use_embedding=False) == "cells"


def test_unknown_prompt_lists_known_ones_and_closest_match():
    with pytest.raises(UnknownPromptError) as err:
        resolve_prompt("nucleii segmentaton", use_embedding=False)
    message = str(err.value)
    assert "nuclei, cells" in message
    assert "Closest match: 'nuclei segmentation' (nuclei)" in message


def test_prompt_indices_are_stable():
    assert [prompt_index(p) for p in CANONICAL_PROMPTS] == [0, 1]
