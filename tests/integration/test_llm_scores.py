"""bench/llm_scores.py on the real chat model: what bench/judge.py's figures rest on."""

from __future__ import annotations

import numpy as np
import pytest

from bench.llm_scores import LlamaScorer
from server.engines.llama_cpp import LlamaCppChatModel
from tests.model_paths import chat_gguf

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def scorer() -> LlamaScorer:
    return LlamaScorer(LlamaCppChatModel(chat_gguf(), context_size=512, threads=1), threads=1)


def test_a_cached_prefix_gives_the_same_log_probabilities(scorer: LlamaScorer) -> None:
    passage = scorer.tokenize(
        "Passage: Toilets: on the ground floor, past the lifts.\nA visitor asks:"
    )
    question = scorer.tokenize(" Where are the toilets?")
    first = scorer.logprobs(passage, question)
    other = scorer.logprobs(passage, scorer.tokenize(" When do you open?"))  # same prefix
    again = scorer.logprobs(passage, question)
    assert first.shape == (len(question),) and other.shape[0] > 0
    assert np.all(first <= 0.0)
    np.testing.assert_allclose(again, first, atol=1e-3)


def test_next_token_log_probabilities_are_a_distribution(scorer: LlamaScorer) -> None:
    found = scorer.next_token_logprobs(scorer.tokenize("The capital of France is"))
    assert np.exp(found).sum() == pytest.approx(1.0, abs=1e-3)


def test_too_long_for_the_context_is_refused(scorer: LlamaScorer) -> None:
    with pytest.raises(ValueError):
        scorer.logprobs([1] * 1000, [1] * 100)  # a 1024-token context
