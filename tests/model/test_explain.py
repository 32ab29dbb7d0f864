"""Explanations: spans map back to the original text, contributions are exact occlusion log-odds."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

import model.predictor as predictor_module
from model import Predictor
from model.checkpoint import DEFAULT_CHECKPOINT
from model.explain import Stopped, explain, plan, throughput

MIXED = "the food was great but the service was terrible"


def log_odds(p: float) -> float:
    return math.log(p / (1 - p))


def test_spans_cover_the_original_characters(predictor: Predictor) -> None:
    text = "I LOVE this, it's Wonderful  zebra!!"
    (result,) = explain(predictor, [text])
    seen = [(text[t.start : t.end], t.token) for t in result.tokens]
    assert seen == [
        ("I", "i"),
        ("LOVE", "love"),
        ("this", "this"),
        (",", ","),
        ("it", "it"),
        ("'s", "[UNK]"),
        ("Wonderful", "wonderful"),
        ("zebra", "[UNK]"),
        ("!!", "[UNK]"),
    ]


def test_urls_and_mentions_span_the_whole_match(predictor: Predictor) -> None:
    text = "love it @Some_User see HTTPS://example.com/a?b=1 now"
    (result,) = explain(predictor, [text])
    assert [text[t.start : t.end] for t in result.tokens] == [
        "love", "it", "@Some_User", "see", "HTTPS://example.com/a?b=1", "now"
    ]  # fmt: skip


def test_prediction_matches_predict_and_contributions_match_deleting_the_word(predictor: Predictor) -> None:
    text = "great movie , terrible food"
    (result,) = explain(predictor, [text])
    (plain,) = predictor.predict([text])
    assert result.label == plain.label
    assert result.score == pytest.approx(plain.score, abs=1e-5)
    words = text.split()
    assert [t.token for t in result.tokens] == words
    for k, token in enumerate(result.tokens):
        without = " ".join(words[:k] + words[k + 1 :])
        p = predictor.predict([without])[0].probabilities[result.label]
        assert token.contribution == pytest.approx(log_odds(result.score) - log_odds(p), abs=1e-4)


def test_batches_of_any_size_give_the_same_answers(predictor: Predictor) -> None:
    texts = ["i love this", "", "awful", "the report was published on monday , terrible service"]
    one_by_one = [explain(predictor, [t])[0] for t in texts]
    together = explain(predictor, texts, max_steps=7)
    assert [e.label for e in together] == [e.label for e in one_by_one]
    for a, b in zip(together, one_by_one, strict=True):
        assert [t.token for t in a.tokens] == [t.token for t in b.tokens]
        np.testing.assert_allclose(
            [t.contribution for t in a.tokens], [t.contribution for t in b.tokens], atol=1e-5
        )
    assert together[1].tokens == [] and sum(together[1].probabilities.values()) == pytest.approx(1)


def test_text_past_max_length_is_flagged_and_cut(predictor: Predictor) -> None:
    (result,) = explain(predictor, ["great " * 40])
    assert result.truncated
    assert len(result.tokens) == predictor.checkpoint.config.max_length


def test_a_plan_says_what_an_explanation_costs_before_it_runs(predictor: Predictor) -> None:
    texts = ["i love this", "awful", "", "great " * 40]
    made = plan(predictor, texts, max_steps=40)
    lengths = [len(e.ids) for e in made.encoded]
    assert lengths == [3, 1, 0, predictor.checkpoint.config.max_length]
    assert made.rows == sum(n + 1 for n in lengths)
    assert sorted(i for group in made.passes for i in group) == [0, 1, 2, 3]
    # Each pass within the bound, but for a text too long for one on its own, which runs alone.
    for group in made.passes:
        steps = sum(lengths[i] + 1 for i in group) * max(1, max(lengths[i] for i in group))
        assert steps <= 40 or len(group) == 1
    assert made.steps == sum(
        sum(lengths[i] + 1 for i in g) * max(1, max(lengths[i] for i in g)) for g in made.passes
    )
    assert explain(predictor, made) == explain(predictor, texts)


def test_throughput_is_measured_once_per_predictor(predictor: Predictor) -> None:
    rate = throughput(predictor)
    assert rate > 0 and throughput(predictor) == rate


def test_a_stopped_explanation_runs_no_further_pass(predictor: Predictor) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        explain(predictor, ["i love this"], stop=stop)


def test_explain_and_predictor_import_one_way() -> None:
    """model.explain uses the predictor; the predictor knows nothing of explanations (no cycle)."""
    source = Path(predictor_module.__file__).read_text()
    assert "model.explain" not in source and "explain" not in dir(Predictor)


@pytest.fixture(scope="module")
def default_predictor() -> Predictor:
    return Predictor.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")


def test_default_model_blames_the_two_sentiment_words(default_predictor: Predictor) -> None:
    (result,) = explain(default_predictor, [MIXED])
    by_word = {MIXED[t.start : t.end]: t.contribution for t in result.tokens}
    ranked = sorted(by_word, key=by_word.__getitem__)
    # Whatever the label, one of the two words pushes towards it hardest and the other against it.
    assert ranked[-1] in {"great", "terrible"}
    assert by_word["great"] * by_word["terrible"] < 0
