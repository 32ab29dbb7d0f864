"""Predictor: texts in, labels and probabilities out, in input order, whatever the batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import predictor as predictor_module
from model.predictor import Prediction, Predictor, resolve_device
from tests.conftest import CORPUS, LABELS, tiny_checkpoint_object

# Different lengths, so the length sort inside predict_proba really reorders them.
TEXTS = [
    "this is the worst , i hate it and i hate the food",
    "love",
    "the meeting is at noon",
    "",
    "great great great movie",
    "terrible",
    *CORPUS,
]


@pytest.fixture(scope="module")
def local() -> Predictor:
    return Predictor(tiny_checkpoint_object(seed=5), device="cpu", batch_size=3)


def test_order_is_preserved(local: Predictor) -> None:
    one_by_one = np.concatenate([local.predict_proba([text])[0] for text in TEXTS])
    together, _ = local.predict_proba(TEXTS)
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    assert len({tuple(row) for row in together.round(6)}) > 1  # the texts really differ


def test_probabilities_sum_to_one(local: Predictor) -> None:
    for p in local.predict(TEXTS):
        assert isinstance(p, Prediction)
        assert set(p.probabilities) == set(LABELS)
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.label == max(p.probabilities, key=p.probabilities.__getitem__)
        assert p.score == p.probabilities[p.label]
        assert 0.0 <= p.score <= 1.0


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_results_do_not_depend_on_batch_size(local: Predictor, batch_size: int) -> None:
    reference, _ = local.predict_proba(TEXTS)
    other = Predictor(local.checkpoint, device="cpu", batch_size=batch_size)
    got, _ = other.predict_proba(TEXTS)
    np.testing.assert_allclose(got, reference, atol=1e-6)


def test_torchscript_and_eager_give_the_same_probabilities(local: Predictor) -> None:
    eager = Predictor(local.checkpoint, device="cpu", batch_size=3, torchscript=False)
    assert local.scripted and isinstance(local.model, torch.jit.ScriptModule)
    assert not eager.scripted and not isinstance(eager.model, torch.jit.ScriptModule)
    np.testing.assert_allclose(local.predict_proba(TEXTS)[0], eager.predict_proba(TEXTS)[0], atol=1e-6)


def test_without_torchscript_the_model_runs_eagerly_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unsupported(module: torch.nn.Module) -> None:
        raise RuntimeError("TorchScript is not supported by this torch")

    monkeypatch.setattr(predictor_module.torch.jit, "script", unsupported)
    fallback = Predictor(tiny_checkpoint_object(seed=5), device="cpu")
    assert not fallback.scripted
    assert "eager mode" in caplog.text and "not supported by this torch" in caplog.text
    assert [p.label for p in fallback.predict(TEXTS)]


def test_int8_quantisation_runs_scripted_and_stays_close(local: Predictor) -> None:
    quantized = Predictor(local.checkpoint, device="cpu", quantize=True)
    eager = Predictor(local.checkpoint, device="cpu", quantize=True, torchscript=False)
    assert quantized.quantized and quantized.scripted and not eager.scripted
    got = quantized.predict_proba(TEXTS)[0]
    np.testing.assert_allclose(got, eager.predict_proba(TEXTS)[0], atol=1e-6)  # scripting changes nothing
    np.testing.assert_allclose(got, local.predict_proba(TEXTS)[0], atol=0.05)  # int8 weights: close


def test_from_checkpoint_matches_the_saved_model(predictor: Predictor) -> None:
    fresh = Predictor(tiny_checkpoint_object(), device="cpu")
    np.testing.assert_allclose(predictor.predict_proba(TEXTS)[0], fresh.predict_proba(TEXTS)[0], atol=1e-6)
    assert predictor.labels == LABELS
    assert predictor.device == torch.device("cpu")


def test_truncation_is_reported_per_text(predictor: Predictor) -> None:
    long = " ".join(["great"] * (predictor.checkpoint.config.max_length + 1))
    results = predictor.predict(["great", long])
    assert [p.truncated for p in results] == [False, True]


def test_empty_input(predictor: Predictor) -> None:
    assert predictor.predict([]) == []
    probabilities, truncated = predictor.predict_proba([])
    assert probabilities.shape == (0, len(LABELS)) and truncated == []


def test_temperature_softens_without_changing_the_label() -> None:
    sharp = Predictor(tiny_checkpoint_object(seed=5), device="cpu")
    soft_checkpoint = tiny_checkpoint_object(seed=5)
    soft_checkpoint.temperature = 10.0
    soft = Predictor(soft_checkpoint, device="cpu")
    for a, b in zip(sharp.predict(TEXTS), soft.predict(TEXTS), strict=True):
        assert a.label == b.label
        assert b.score <= a.score


def test_inference_does_not_track_gradients(local: Predictor) -> None:
    local.predict(["love"])
    assert all(p.grad is None for p in local.model.parameters())
    assert not local.model.training


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_asking_for_missing_cuda_fails_clearly() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
