"""Temperature scaling of the softmax on the validation split (Guo et al. 2017), and when to skip it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TEMPERATURE_RANGE = (0.05, 20.0)
# Below this many validation rows a fitted temperature follows a handful of examples, not the model
# (30 rows once gave 0.05: "I love it" -> negative 1.0), and the best epoch is picked on noise.
MIN_VALIDATION_ROWS = 200


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature that minimises validation NLL, clamped to ``TEMPERATURE_RANGE``."""
    z, y = torch.from_numpy(logits).double(), torch.from_numpy(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(*TEMPERATURE_RANGE))


def calibrate(logits: np.ndarray, labels: np.ndarray, enabled: bool = True) -> tuple[float, list[str]]:
    """The temperature to ship (1.0 when calibration is off or cannot be trusted) and why not, if not.

    ``logits`` (N, L) and ``labels`` (N,) are the validation split's."""
    if not enabled:
        return 1.0, []
    if len(labels) < MIN_VALIDATION_ROWS:
        return 1.0, []  # diagnostics.split_warnings already says so, before training starts
    temperature = fit_temperature(logits, labels)
    low, high = TEMPERATURE_RANGE
    if low < temperature < high:
        return temperature, []
    return 1.0, [
        f"the fitted calibration temperature {temperature:.3g} is at its bound ({low} to {high}): the "
        "validation split cannot calibrate this model, so probabilities are left uncalibrated; "
        "a larger or more representative --val file may help"
    ]
