"""The epoch loop: which weights it keeps, and what a resumed run gets back."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.tokenizer import TextTokenizer
from tests.conftest import CORPUS
from training.batches import EncodedSplit, encode_split
from training.config import TINY, TrainConfig
from training.loop import Loop, SingleProcess, predict_logits, softmax
from training.metrics import classification_report
from training.priors import Priors
from training.resume import ResumeState
from training.train import build_model, build_tokenizer

CONFIG = replace(TrainConfig(), **{**TINY, "glove": False, "epochs": 1, "batch_size": 2})


def make_loop(config: TrainConfig, strategy: SingleProcess | None = None) -> Loop:
    torch.manual_seed(0)
    tokenizer = TextTokenizer.train(CORPUS, max_length=16, min_frequency=1)
    split = encode_split(tokenizer, CORPUS, np.array([2, 2, 0, 0, 1, 1]))
    model = build_model(config, tokenizer, 3, None)
    data = {"train": split, "val": split}
    return Loop(model, config, data, torch.device("cpu"), progress=False, strategy=strategy)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_without_averaging_the_trained_weights_are_kept() -> None:
    loop = make_loop(CONFIG)
    loop.run(lambda _: None)
    assert loop.ema is None
    for name, tensor in params(loop.model).items():
        assert torch.equal(loop.best_state[name], tensor), name


def test_with_averaging_the_moving_average_is_validated_and_kept() -> None:
    loop = make_loop(replace(CONFIG, ema_decay=0.5))
    assert loop.ema is not None
    seen: list[dict[str, torch.Tensor]] = []  # the trained weights after each optimiser step
    update = loop.ema.update_parameters

    def record(model: torch.nn.Module) -> None:
        seen.append(params(model))
        update(model)

    loop.ema.update_parameters = record  # type: ignore[method-assign]
    loop.run(lambda _: None)
    assert len(seen) == 3  # 6 texts, batches of 2
    assert all(torch.equal(seen[-1][n], t) for n, t in params(loop.model).items())
    # The first update copies the weights, then each step moves the average halfway (decay 0.5).
    for name in seen[0]:
        expected = seen[0][name]
        for later in seen[1:]:
            expected = 0.5 * expected + 0.5 * later[name]
        assert torch.allclose(loop.best_state[name], expected, atol=1e-6), name
        assert torch.allclose(loop.evaluated.state_dict()[name], expected, atol=1e-6), name
    assert any(not torch.equal(loop.best_state[n], seen[-1][n]) for n in seen[0])


def test_a_resumed_loop_gets_its_moving_average_back(tmp_path: Path) -> None:
    config = replace(CONFIG, ema_decay=0.9)
    loop = make_loop(config)
    loop.run(lambda _: None)
    tokenizer = TextTokenizer.train(CORPUS, max_length=16, min_frequency=1)
    ResumeState.save(tmp_path / "model", loop, tokenizer, "data")

    state = ResumeState.load(tmp_path / "model", config, "data")
    assert state is not None
    again = make_loop(config)
    state.restore(again)
    assert again.ema is not None and loop.ema is not None
    assert int(again.ema.n_averaged) == int(loop.ema.n_averaged) == 3
    for name, tensor in params(loop.ema.module).items():
        assert torch.equal(params(again.ema.module)[name], tensor), name


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_decay_outside_0_to_1_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        replace(CONFIG, ema_decay=decay)


@pytest.mark.parametrize(("patience", "epochs_run", "best"), [(0, 4, 4), (1, 2, 1), (2, 3, 1), (3, 4, 4)])
def test_patience_stops_after_epochs_without_improvement_and_0_never(
    patience: int, epochs_run: int, best: int
) -> None:
    loop = make_loop(replace(CONFIG, epochs=4, patience=patience))
    scores = iter([0.5, 0.4, 0.3, 0.7])  # validation macro-F1: best, worse, worse, best
    loop._validate = lambda: {"loss": 1.0, "accuracy": 0.5, "macro_f1": next(scores)}  # type: ignore[method-assign]
    loop.run(lambda _: None)
    assert (loop.epoch, loop.best_epoch) == (epochs_run, best)


def test_a_negative_patience_is_refused() -> None:
    with pytest.raises(ValueError, match="patience"):
        replace(CONFIG, patience=-1)


def test_adversarial_training_adds_the_loss_under_the_worst_perturbation() -> None:
    loop = make_loop(replace(CONFIG, adversarial=0.5, label_smoothing=0.0))
    loop.model.eval()  # no dropout: both losses are deterministic
    ids, lengths = torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2])
    labels = torch.tensor([0, 2])
    plain = torch.nn.functional.cross_entropy(loop.model(ids, lengths), labels)
    total = loop._loss(ids, lengths, labels)
    assert total.item() > 2 * plain.item()  # the perturbed loss is larger than the clean one
    total.backward()
    assert loop.model.embedding.weight.grad is not None


def test_validation_weighs_each_domain_equally() -> None:
    tokenizer = TextTokenizer.train(CORPUS, max_length=16, min_frequency=1)
    labels = np.array([2, 2, 0, 0, 1, 1])
    domains = np.array([0, 0, 0, 0, 0, 1])  # one domain of five texts, one of a single text
    split = encode_split(tokenizer, CORPUS, labels, domains)
    loop = make_loop(CONFIG)
    loop.data["val"] = split
    report = loop._validate()
    logits = predict_logits(loop.model, split, torch.device("cpu"))
    per_domain = [
        classification_report(labels[rows], softmax(logits[rows]), ["0", "1", "2"])["macro_f1"]
        for rows in (np.arange(5), np.array([5]))
    ]
    assert report["macro_f1"] == pytest.approx(np.mean(per_domain))


def test_the_vocabulary_puts_lexicon_words_before_rare_training_words() -> None:
    texts = ["good good movie movie", "rareword another"]
    priors = Priors(glove_words=["the", "rareword", "another"], lexicon={"superb": 0.8, "awful": -0.7})
    config = replace(CONFIG, min_frequency=2, vocab_size=2 + 5, glove_words=1)
    vocabulary = build_tokenizer(texts, config, priors).vocabulary()[2:]
    # frequent words, then the lexicon, then GloVe's most frequent, then rare words GloVe knows
    assert vocabulary == ["good", "movie", "superb", "awful", "the"]


class HalfBatches(SingleProcess):
    """A strategy that trains on the first row of each batch and records what the loop asked of it."""

    def __init__(self) -> None:
        self.wrapped: list[torch.nn.Module] = []
        self.epochs: list[int] = []
        self.reports: list[dict] = []

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        self.wrapped.append(model)
        return model

    def batches(self, split: EncodedSplit, batch_size: int, epoch: int, rng: np.random.Generator) -> list:
        self.epochs.append(epoch)
        return [rows[:1] for rows in super().batches(split, batch_size, epoch, rng)]

    def agree(self, report: dict) -> dict:
        self.reports.append(report)
        return {**report, "macro_f1": 1.0 - len(self.reports) / 10}  # every epoch worse than the first


def test_the_loop_takes_its_strategy_as_a_parameter() -> None:
    strategy = HalfBatches()
    loop = make_loop(replace(CONFIG, epochs=3, patience=1), strategy)
    loop.run(lambda _: None)
    assert strategy.wrapped == [loop.model] and loop.train_model is loop.model
    assert strategy.epochs == [1, 2] and len(strategy.reports) == 2  # the strategy's verdict stopped it
    assert (loop.epoch, loop.best_epoch) == (2, 1)
    assert 0 < loop.tokens < 2 * int(loop.data["train"].lengths.sum())  # one row of each batch, 2 epochs


def test_state_dict_round_trip_continues_the_run_exactly() -> None:
    config = replace(CONFIG, epochs=2)
    straight = make_loop(config)
    straight.run(lambda _: None)

    first = make_loop(config)
    saved: list[dict] = []
    first.run(lambda loop: saved.append(copy.deepcopy(loop.state_dict())) if loop.epoch == 1 else None)
    again = make_loop(config)
    again.load_state_dict(saved[0])
    assert again.epoch == 1 and len(again.history) == 1
    again.run(lambda _: None)
    assert [h["epoch"] for h in again.history] == [1, 2]
    for name, tensor in params(straight.model).items():
        assert torch.allclose(params(again.model)[name], tensor, atol=1e-6), name
