"""SentimentClassifier: shapes, padding invariance for every pooling, dropout only in training; its config."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import ModelConfig
from model.network import SentimentClassifier

POOLINGS = ["max", "mean", "max_mean", "last"]
VOCAB, LABELS = 20, 3


def classifier(pooling: str = "max_mean", **overrides: object) -> SentimentClassifier:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=VOCAB,
        num_labels=LABELS,
        embedding_dim=6,
        hidden_size=5,
        pooling=pooling,  # type: ignore[arg-type]
        dropout=0.0,
        embedding_dropout=0.0,
        **overrides,  # type: ignore[arg-type]
    )
    return SentimentClassifier(config).eval()


def padded(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) for r in rows])


SENTENCE = [3, 7, 2, 9, 4]
OTHERS = [[5], [8, 8, 8, 8, 8, 8, 8, 8, 8], [11, 12]]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_and_batch_mates_do_not_change_a_rows_logits(
    pooling: str, num_layers: int, bidirectional: bool
) -> None:
    model = classifier(pooling, num_layers=num_layers, bidirectional=bidirectional)
    with torch.no_grad():
        alone = model(*padded([SENTENCE]))[0]
        extra_padding = model(*padded([SENTENCE], width=len(SENTENCE) + 6))[0]
        # Longer and shorter neighbours, the sentence in the middle of an unsorted batch.
        in_batch = model(*padded([OTHERS[0], OTHERS[1], SENTENCE, OTHERS[2]]))[2]
    assert torch.allclose(alone, extra_padding, atol=1e-6)
    assert torch.allclose(alone, in_batch, atol=1e-6)


@pytest.mark.parametrize(
    ("pooling", "num_layers", "bidirectional"),
    [*((p, 2, True) for p in POOLINGS), ("max_mean", 1, False), ("last", 1, False)],
)
def test_torchscript_compiles_forward_to_the_same_logits(
    pooling: str, num_layers: int, bidirectional: bool
) -> None:
    model = classifier(pooling, num_layers=num_layers, bidirectional=bidirectional)
    with warnings.catch_warnings():  # torch.jit is deprecated, still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
    batch = padded([OTHERS[0], OTHERS[1], SENTENCE, OTHERS[2]])
    with torch.no_grad():
        torch.testing.assert_close(scripted(*batch), model(*batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_last_pooling_is_the_top_layers_final_forward_then_backward_state(num_layers: int) -> None:
    model = classifier("last", num_layers=num_layers)
    ids, lengths = padded([OTHERS[0], SENTENCE, OTHERS[2]])
    with torch.no_grad():
        x = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = model.lstm(x)  # h_n: (layers * 2, B, H), the top layer last
        expected = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        torch.testing.assert_close(model._pool(out, lengths, h_n), expected, rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["max", "mean", "max_mean"])
def test_pooling_the_packed_states_matches_pooling_each_text_alone(pooling: str) -> None:
    """Pooling reads the packed rows directly; the reference pools each text's own states."""
    model = classifier(pooling)
    rows = [OTHERS[1], SENTENCE, OTHERS[0], OTHERS[2], SENTENCE[:3]]  # unsorted, a repeated length
    ids, lengths = padded(rows)
    x = model.embedding(ids)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h_n, _) = model.lstm(packed)
    pooled = model._pool(out, lengths, h_n)
    states, _ = pad_packed_sequence(out, batch_first=True)
    parts = {"max": lambda own: [own.amax(0)], "mean": lambda own: [own.mean(0)]}
    parts["max_mean"] = lambda own: [own.amax(0), own.mean(0)]
    reference = torch.stack(
        [torch.cat(parts[pooling](states[k, :n])) for k, n in enumerate(lengths.tolist())]
    )
    assert torch.allclose(pooled, reference, atol=1e-6)
    # The same gradients, through the max's arg-max and the mean's division.
    grads = [torch.autograd.grad(p.square().sum(), x, retain_graph=True)[0] for p in (pooled, reference)]
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_tokens_other_than_pad_id_are_ignored_too(pooling: str) -> None:
    # Only `lengths` says where a text ends: garbage past it must not leak into the result.
    model = classifier(pooling)
    ids, lengths = padded([SENTENCE], width=9)
    garbage = ids.clone()
    garbage[0, len(SENTENCE) :] = 13
    with torch.no_grad():
        assert torch.allclose(model(ids, lengths), model(garbage, lengths), atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shape_and_pooled_width(pooling: str) -> None:
    model = classifier(pooling)
    ids, lengths = padded([SENTENCE, *OTHERS])
    assert model(ids, lengths).shape == (4, LABELS)
    width = model.config.encoder_size * (2 if pooling == "max_mean" else 1)
    assert model.head.in_features == width == 5 * 2 * (2 if pooling == "max_mean" else 1)


def test_a_single_pad_step_gives_finite_logits() -> None:
    # The tokenizer turns an empty text into one [PAD] step of length 1.
    logits = classifier()(torch.zeros(1, 1, dtype=torch.int64), torch.tensor([1]))
    assert torch.isfinite(logits).all()


def test_pad_embedding_is_zero() -> None:
    assert torch.count_nonzero(classifier().embedding.weight[0]) == 0


def test_dropout_is_off_in_eval_and_on_in_train() -> None:
    torch.manual_seed(0)
    model = SentimentClassifier(
        ModelConfig(
            vocab_size=VOCAB,
            num_labels=LABELS,
            embedding_dim=6,
            hidden_size=5,
            dropout=0.5,
            embedding_dropout=0.5,
        )
    )
    ids, lengths = padded([SENTENCE, *OTHERS])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), model(ids, lengths))
        model.train()
        assert not torch.equal(model(ids, lengths), model(ids, lengths))


def test_gradients_reach_every_parameter() -> None:
    model = classifier().train()
    model(*padded([SENTENCE, *OTHERS])).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_config_round_trips_through_a_dict() -> None:
    config = ModelConfig(vocab_size=10, num_labels=2, pooling="last", num_layers=2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.encoder_size == 2 * config.hidden_size
    assert ModelConfig(vocab_size=10, num_labels=2, bidirectional=False).encoder_size == 128


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vocab_size": 1}, "at least 2"),
        ({"num_labels": 1}, "at least 2"),
        ({"pooling": "sum"}, "unknown pooling"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"embedding_dropout": -0.1}, "embedding_dropout must be in"),
        ({"ngram_buckets": -1}, "ngram_buckets must be at least 0"),
    ],
)
def test_config_rejects_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"vocab_size": 10, "num_labels": 2, **overrides})


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown model config keys: \\['colour'\\]"):
        ModelConfig.from_dict({"vocab_size": 10, "num_labels": 2, "colour": "red"})


def test_the_lexicon_is_one_more_input_per_token_and_changes_the_answer() -> None:
    model = classifier(lexicon=True)
    assert model.lstm.input_size == 7  # 6 embedding dimensions + the valence
    batch = padded([SENTENCE, OTHERS[2]])
    with torch.no_grad():
        before = model(*batch)
        model.lexicon[SENTENCE[0]] = 1.0  # only the first text holds this token
        after = model(*batch)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=0)


def test_the_lexicon_is_saved_with_the_weights_only_when_used() -> None:
    assert "lexicon" in classifier(lexicon=True).state_dict()
    assert "lexicon" not in classifier().state_dict()  # older checkpoints load unchanged


def ngram_classifier() -> SentimentClassifier:
    model = classifier(ngram_buckets=16)
    with torch.no_grad():
        model.ngrams.uniform_(-1, 1)  # every row, [PAD]'s too: padding must not count even then
    return model


def test_the_ngram_path_starts_at_zero_and_adds_nothing_untrained() -> None:
    plain, wide = classifier(), classifier(ngram_buckets=16)
    assert wide.ngrams.shape == (VOCAB + 16, LABELS) and not wide.ngrams.any()
    batch = padded([SENTENCE, *OTHERS])
    with torch.no_grad():
        torch.testing.assert_close(wide(*batch), plain(*batch), rtol=0, atol=0)


def test_the_ngram_path_is_the_mean_weight_of_the_words_and_hashed_word_pairs() -> None:
    model = ngram_classifier()
    with torch.no_grad():
        lstm_only = classifier()(*padded([SENTENCE]))[0]
        logits = model(*padded([SENTENCE]))[0]
    pairs = [VOCAB + (a * 1_000_003 + b) % 16 for a, b in itertools.pairwise(SENTENCE)]
    expected = model.ngrams[SENTENCE + pairs].mean(dim=0)
    torch.testing.assert_close(logits - lstm_only, expected.detach(), rtol=0, atol=1e-6)


def test_padding_and_batch_mates_do_not_change_the_ngram_logits() -> None:
    model = ngram_classifier()
    with torch.no_grad():
        alone = model(*padded([SENTENCE]))[0]
        extra_padding = model(*padded([SENTENCE], width=len(SENTENCE) + 6))[0]
        in_batch = model(*padded([OTHERS[0], OTHERS[1], SENTENCE, OTHERS[2]]))[2]
        one_word = model(*padded([[5]]))[0]
        one_word_in_batch = model(*padded([[5], SENTENCE]))[0]
    torch.testing.assert_close(alone, extra_padding, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, in_batch, rtol=0, atol=1e-6)
    torch.testing.assert_close(one_word, one_word_in_batch, rtol=0, atol=1e-6)


def test_the_ngram_weights_are_trained_and_saved_only_when_used() -> None:
    model = classifier(ngram_buckets=16).train()
    model(*padded([SENTENCE, *OTHERS])).sum().backward()
    assert model.ngrams.grad is not None and model.ngrams.grad[SENTENCE].abs().sum() > 0
    assert model.ngrams.grad[0].abs().sum() == 0  # padding gets no gradient
    assert "ngrams" in model.state_dict()
    assert "ngrams" not in classifier().state_dict()  # older checkpoints load unchanged


def lexicon_classifier() -> SentimentClassifier:
    model = classifier(lexicon=True)
    model.lexicon.uniform_(-1, 1)
    return model


@pytest.mark.parametrize("build", [lexicon_classifier, ngram_classifier], ids=["lexicon", "ngrams"])
def test_torchscript_with_the_extra_inputs_gives_the_same_logits(build) -> None:  # type: ignore[no-untyped-def]
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
    batch = padded([OTHERS[0], OTHERS[1], SENTENCE, OTHERS[2]])
    with torch.no_grad():
        torch.testing.assert_close(scripted(*batch), model(*batch), rtol=0, atol=1e-6)
