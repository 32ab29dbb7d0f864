"""Epochs of optimisation with early stopping on validation macro-F1."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from model.network import SentimentClassifier
from training.batches import EncodedSplit, bucketed_batches, collate
from training.config import TrainConfig
from training.metrics import classification_report


@torch.inference_mode()
def predict_logits(
    model: SentimentClassifier, split: EncodedSplit, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """(N, L) logits in the split's order."""
    model.eval()
    logits = np.empty((len(split), model.config.num_labels), dtype=np.float32)
    for rows in bucketed_batches(split, batch_size, rng=None):
        ids, lengths, _ = collate(split, rows)
        logits[rows] = model(ids.to(device), lengths).float().cpu().numpy()
    return logits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def param_groups(model: SentimentClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    """Pretrained embeddings learn more slowly than the rest, so fine-tuning keeps GloVe's geometry
    (and with it, what the model knows about words it never saw labelled). The n-gram weights learn
    faster: each row is touched only by the batches holding its word or pair, and is averaged with
    a text's other n-grams. No decay on biases."""
    embedding = [p for p in model.embedding.parameters() if p.requires_grad]
    ngrams = [p for n, p in model.named_parameters() if n == "ngrams"]
    rest = [
        (n, p)
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("embedding.") and n != "ngrams"
    ]
    groups = [
        {"params": [p for n, p in rest if p.ndim > 1], "lr": config.lr},
        {"params": [p for n, p in rest if p.ndim <= 1], "lr": config.lr, "weight_decay": 0.0},
    ]
    if ngrams:
        groups.append({"params": ngrams, "lr": config.lr * config.ngram_lr_scale})
    if embedding:
        groups.append({"params": embedding, "lr": config.lr * config.embedding_lr_scale, "weight_decay": 0.0})
    return groups


class Strategy(Protocol):
    """How a loop spreads its work: one process (``SingleProcess``) or several
    (``training.distributed.DataParallel`` under torchrun)."""

    @property
    def is_main(self) -> bool:
        """Whether this process reports (progress bars, epoch lines)."""
        ...

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module whose forward pass trains ``model`` (DDP synchronises gradients in it)."""
        ...

    def rng(self, seed: int) -> np.random.Generator:
        """The generator for word dropout."""
        ...

    def batches(
        self, split: EncodedSplit, batch_size: int, epoch: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """This process's rows of each batch of ``epoch``."""
        ...

    def agree(self, report: dict[str, Any]) -> dict[str, Any]:
        """One validation verdict for all processes, so that they stop together."""
        ...


class SingleProcess:
    """Every batch in this process."""

    is_main = True

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    def batches(
        self, split: EncodedSplit, batch_size: int, epoch: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        return list(bucketed_batches(split, batch_size, rng))

    def agree(self, report: dict[str, Any]) -> dict[str, Any]:
        return report


class Loop:
    """Owns the optimiser, schedule and history; ``run`` trains until done or out of patience."""

    def __init__(
        self,
        model: SentimentClassifier,
        config: TrainConfig,
        data: dict[str, EncodedSplit],
        device: torch.device,
        progress: bool = True,
        strategy: Strategy | None = None,
    ) -> None:
        self.model, self.config, self.data, self.device = model, config, data, device
        self.strategy: Strategy = strategy or SingleProcess()
        self.progress = progress and self.strategy.is_main
        # fused: one kernel for every parameter's update. On CPU it made whole training steps 1.16x
        # (23k-word vocabulary) to 1.69x (95k words) as fast as the default foreach step.
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config), weight_decay=config.weight_decay, fused=True
        )
        steps = config.epochs * -(-len(data["train"]) // config.batch_size)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer,
                [g["lr"] for g in self.optimizer.param_groups],
                total_steps=steps,
                pct_start=0.1,
            )
            if config.schedule == "onecycle"
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        # Optional (--ema-decay): a moving average of the weights, validated and kept instead of the raw
        # weights. It did not beat the defaults on the movie sentences (docs/quality.md).
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            if config.ema_decay
            else None
        )
        self.rng = self.strategy.rng(config.seed)
        self.history: list[dict[str, Any]] = []
        self.epoch, self.best_epoch, self.best_f1, self.bad_epochs = 0, 0, -1.0, 0
        self.best_state = copy.deepcopy(self.evaluated.state_dict())
        self.seconds, self.tokens = 0.0, 0
        # Mixed precision on CUDA (bf16 needs no loss scaling); full precision on CPU.
        self.amp = device.type == "cuda"
        self.train_model = self.strategy.wrap(model)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is: weights, optimiser,
        schedule, moving average, random generators, history and early-stopping counters."""
        return {
            "model": self.model.state_dict(),
            "best_state": self.best_state,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_f1": self.best_f1,
            "bad_epochs": self.bad_epochs,
            "seconds": self.seconds,
            "tokens": self.tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of a loop built with the same model, config and data."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.best_state = state["best_state"]
        self.history = list(state["history"])
        self.epoch, self.best_epoch, self.best_f1 = state["epoch"], state["best_epoch"], state["best_f1"]
        self.bad_epochs, self.seconds, self.tokens = state["bad_epochs"], state["seconds"], state["tokens"]

    @property
    def evaluated(self) -> SentimentClassifier:
        """The weights that are validated and kept: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def run(self, on_epoch: Callable[[Loop], Any]) -> None:
        patience = self.config.patience or self.config.epochs  # 0: never stop early
        while self.epoch < self.config.epochs and self.bad_epochs < patience:
            self.epoch += 1
            loss = self._train_epoch()
            report = self.strategy.agree(self._validate())
            improved = report["macro_f1"] > self.best_f1
            if improved:
                self.best_f1, self.best_epoch, self.bad_epochs = report["macro_f1"], self.epoch, 0
                self.best_state = copy.deepcopy(self.evaluated.state_dict())
            else:
                self.bad_epochs += 1
            self.history.append(
                {
                    "epoch": self.epoch,
                    "train_loss": loss,
                    "val_loss": report["loss"],
                    "val_accuracy": report["accuracy"],
                    "val_macro_f1": report["macro_f1"],
                    "tokens_per_second": self.tokens_per_second,
                }
            )
            tqdm.write(
                f"epoch {self.epoch}: train loss {loss:.4f}  val loss {report['loss']:.4f}  "
                f"val acc {report['accuracy']:.4f}  val macro-F1 {report['macro_f1']:.4f}"
                + ("  (best)" if improved else "")
            )
            on_epoch(self)

    def _train_epoch(self) -> float:
        self.model.train()
        split, cfg = self.data["train"], self.config
        total_loss, seen = 0.0, 0
        batches = self.strategy.batches(split, cfg.batch_size, self.epoch, self.rng)
        bar = tqdm(
            batches,
            desc=f"epoch {self.epoch}/{cfg.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
        )
        start = time.perf_counter()
        for rows in bar:
            ids, lengths, labels = collate(split, rows, cfg.word_dropout, self.rng)
            ids, labels = ids.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self._loss(ids, lengths, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total_loss += loss.item() * len(rows)
            seen += len(rows)
            self.tokens += int(lengths.sum())
            elapsed = self.seconds + time.perf_counter() - start
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", tok_s=f"{self.tokens / elapsed:,.0f}")
        self.seconds += time.perf_counter() - start
        return total_loss / max(seen, 1)

    def _loss(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy; with ``adversarial``, plus the loss under the embedding perturbation of that
        norm which increases it most, to first order (Miyato et al. 2017, per text)."""
        smoothing = self.config.label_smoothing
        if not self.config.adversarial:
            return nn.functional.cross_entropy(
                self.train_model(ids, lengths).float(), labels, label_smoothing=smoothing
            )
        embedded = self.model.embedding(ids)  # (B, T, E)
        loss = nn.functional.cross_entropy(
            self.model.classify(embedded, ids, lengths).float(), labels, label_smoothing=smoothing
        )
        (grad,) = torch.autograd.grad(loss, embedded, retain_graph=True)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        perturbed = embedded + self.config.adversarial * grad.detach() / norm
        adversarial = nn.functional.cross_entropy(
            self.model.classify(perturbed, ids, lengths).float(), labels, label_smoothing=smoothing
        )
        return loss + adversarial

    def _validate(self) -> dict[str, Any]:
        """The validation report; where the split has domains, its macro-F1 is the mean of each
        domain's, so that the largest domain does not choose the epoch alone."""
        split = self.data["val"]
        logits = predict_logits(self.evaluated, split, self.device)
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(split.labels)))
        labels = [str(k) for k in range(logits.shape[1])]
        report = {**classification_report(split.labels, softmax(logits), labels), "loss": loss}
        if split.domains is not None and len(set(split.domains.tolist())) > 1:
            per_domain = [
                classification_report(split.labels[rows], softmax(logits[rows]), labels)["macro_f1"]
                for k in np.unique(split.domains)
                if len(rows := np.flatnonzero(split.domains == k))
            ]
            report["macro_f1"] = float(np.mean(per_domain))
        return report
