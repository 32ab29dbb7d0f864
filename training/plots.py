"""Learning curves and confusion matrices as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # render to files; never open a window
import matplotlib.pyplot as plt
import numpy as np

LEARNING_CURVES, CONFUSION = "learning_curves.png", "confusion_matrix.png"


def learning_curves(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None) -> Path:
    """Loss (train and validation) and validation accuracy / macro-F1 per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    right.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation accuracy")
    right.plot(epochs, [h["val_macro_f1"] for h in history], "o-", label="validation macro-F1")
    right.set(xlabel="epoch", ylabel="score", title="Validation")
    for ax in (left, right):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(report: dict[str, Any], path: Path, title: str = "Confusion matrix") -> Path:
    """Counts, with each cell shaded by its share of the true class (row-normalised)."""
    matrix = np.asarray(report["confusion_matrix"])
    labels = report["labels"]
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), constrained_layout=True)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{title}\naccuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}",
    )
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of true class")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_plots(metrics: dict[str, Any], directory: Path) -> list[Path]:
    return [
        learning_curves(metrics["history"], directory / LEARNING_CURVES, metrics.get("best_epoch")),
        confusion_matrix(metrics["test"], directory / CONFUSION, "Test split"),
    ]
