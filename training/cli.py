"""``python -m training``: train a checkpoint on the default corpus or on your own file."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import DEFAULT_CHECKPOINT, file_sha256
from training import distributed
from training.config import TrainConfig, tiny
from training.corpus import CROWDFLOWER, HUTTO, PROJECT_ROOT
from training.data import DataError, Dataset, load_dataset, load_default_corpus
from training.loop import Loop
from training.metrics import format_report
from training.resume import state_path
from training.train import train

HELP = {
    "seed": "random seed for splits, initialisation and batching",
    "epochs": "number of epochs (fewer only with --patience)",
    "batch_size": "training batch size",
    "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW decoupled weight decay",
    "clip_norm": "gradient-norm clipping threshold",
    "patience": (
        "stop after this many epochs without a better validation macro-F1 (0: never stop early; "
        "the best epoch is kept either way)"
    ),
    "schedule": "learning-rate schedule: onecycle or constant",
    "word_dropout": "probability of replacing a training token with [UNK]",
    "label_smoothing": "label smoothing of the training loss (0: none)",
    "ema_decay": "keep a moving average of the weights with this per-step decay (0: off)",
    "vocab_size": "maximum vocabulary size, [PAD] and [UNK] included",
    "min_frequency": "minimum count for a corpus word not known to GloVe",
    "max_length": "tokens kept per text; longer texts are truncated",
    "glove": "initialise embeddings from GloVe 6B 50d",
    "glove_words": "most frequent GloVe words added to the vocabulary",
    "lexicon": "give the model each token's valence in the VADER lexicon as one more input",
    "ngram_buckets": "hash buckets of word pairs in a linear n-gram model beside the LSTM (0: no such model)",
    "ngram_dropout": "share of training texts whose n-gram logits are dropped, so the LSTM learns alone too",
    "ngram_lr_scale": "learning rate of the n-gram weights, relative to --lr",
    "adversarial": "norm of adversarial perturbations of the embeddings in training (0: off)",
    "freeze_embeddings": "keep the pretrained embeddings fixed",
    "embedding_lr_scale": "learning rate of the embeddings, relative to --lr",
    "embedding_dim": "embedding width (50 with GloVe)",
    "hidden_size": "LSTM hidden size per direction",
    "num_layers": "stacked LSTM layers",
    "dropout": "dropout before the head (and between LSTM layers)",
    "embedding_dropout": "dropout on the embeddings",
    "pooling": "pooling over LSTM states: max, mean, max_mean or last",
    "calibrate": "fit a softmax temperature on the validation split",
    "val_fraction": "fraction of --data held out for validation (without --val)",
    "test_fraction": "fraction of --data held out for the test report (without --test)",
    "max_examples": "cap on training examples",
    "init_from": "fine-tune from this checkpoint (its architecture and vocabulary, extended) instead of "
    "training from scratch",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, except where there is none to show (None, or off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=HelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", type=Path, help="labelled CSV/TSV/JSONL/Parquet file (default: the CrowdFlower tweets)"
    )
    data.add_argument("--val", type=Path, help="separate validation file (default: split from --data)")
    data.add_argument("--test", type=Path, help="separate test file (default: split from --data)")
    data.add_argument("--text-column", default="text", help="column holding the texts")
    data.add_argument(
        "--label-column", default="label", help="column holding the labels (strings or integers)"
    )
    data.add_argument(
        "--group-column", help="column of document ids: rows of one document stay on one side of a split"
    )
    data.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL files")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--output",
        type=Path,
        help="checkpoint directory to write (default: checkpoints/default for the default corpus, "
        "checkpoints/NAME for --data NAME.csv, checkpoints/tiny for --tiny, checkpoints/NAME-tiny for both)",
    )
    run.add_argument(
        "--force", action="store_true", help="replace a checkpoint already at --output (kept otherwise)"
    )
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    run.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: the cores not busy at the start)"
    )
    run.add_argument("--resume", action="store_true", help="continue an interrupted run into --output")
    run.add_argument("--tiny", action="store_true", help="a very small model on a few hundred examples")
    run.add_argument("--dry-run", action="store_true", help="--tiny, and write nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--tensorboard", type=Path, metavar="DIR", help="also log per-epoch metrics for TensorBoard here"
    )
    hyper = parser.add_argument_group("hyperparameters")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            hyper.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=HELP[f.name]
            )
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
            hyper.add_argument(flag, type=kind, default=f.default, help=HELP[f.name])
    return parser


def default_threads(sample_s: float = 0.2) -> int:
    """Torch threads for a run: the cores free right now. A thread on a core that another process
    keeps busy holds every step back (the others wait for it), so on a busy machine fewer is faster."""
    cores = len(os.sched_getaffinity(0))
    try:
        busy = cores * _busy_share(sample_s)
    except OSError:  # no /proc/stat: fall back to the load average
        busy = os.getloadavg()[0]
    return max(1, min(cores, round(cores - busy)))


def _busy_share(sample_s: float) -> float:
    """Share of all CPU time spent outside idle and iowait over ``sample_s`` seconds (/proc/stat)."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total, idle = times()
    time.sleep(sample_s)
    total2, idle2 = times()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version() -> str:
    """The installed package's version (pyproject.toml is its only source)."""
    try:
        return version("lstm-sentiment")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset | None, Dataset | None, dict[str, Any]]:
    def load(path: Path) -> Dataset:
        return load_dataset(path, args.text_column, args.label_column, args.encoding, args.group_column)

    if args.data is None:
        data = load_default_corpus()
        provenance = {"data": {"path": data.source, "sha256": data_sha256(data), "assets": asset_records()}}
    else:
        data = load(args.data)
        provenance = {"data": {"path": str(args.data), "sha256": file_sha256(args.data)}}
    val = load(args.val) if args.val else None
    test = load(args.test) if args.test else None
    for name, d in (("val", val), ("test", test)):
        if d is not None:
            provenance[name] = {"path": d.source, "sha256": file_sha256(Path(d.source))}
    return data, val, test, provenance


def data_sha256(data: Dataset) -> str:
    """SHA-256 of the rows as trained on: domain, group, label and text of each."""
    digest = hashlib.sha256()
    for row in zip(data.domains or (), data.groups or (), data.labels, data.texts, strict=False):
        digest.update(("\t".join(row) + "\n").encode())
    return digest.hexdigest()


def asset_records() -> list[dict[str, Any]]:
    """Where the default corpus came from: each package's SOURCE.json (requirement, hash, licence)."""
    return [json.loads((asset.directory / "SOURCE.json").read_text()) for asset in (CROWDFLOWER, HUTTO)]


def output_path(args: argparse.Namespace) -> Path:
    """Where the checkpoint goes: as given, or a directory named after the data, so that only the
    no-argument run (which rebuilds the shipped model) writes checkpoints/default."""
    if args.output is not None:
        return Path(args.output)
    if args.data is None and not args.tiny:
        return DEFAULT_CHECKPOINT
    if args.data is None:
        return DEFAULT_CHECKPOINT.parent / "tiny"
    stem = Path(args.data).stem
    return DEFAULT_CHECKPOINT.parent / (f"{stem}-tiny" if args.tiny else stem)


def check_output(args: argparse.Namespace, output: Path) -> None:
    """Refuse to replace a checkpoint unless told to: a smoke test must never eat a real model."""
    rebuilds_default = args.output is None and args.data is None and not args.tiny
    resuming = args.resume and state_path(output).is_file()
    if (output / "config.json").exists() and not (args.force or resuming or rebuilds_default):
        raise ValueError(
            f"{output} already holds a checkpoint; pass --force to replace it, or another --output"
        )


def interrupted(output: Path | None) -> str:
    """The one line Ctrl-C prints: what was kept, and the command that carries on."""
    if output is not None and state_path(output).is_file():
        return "interrupted: the last finished epoch is saved; rerun the same command with --resume to go on"
    if output is not None:
        return "interrupted before an epoch finished: nothing saved (--resume goes on after a finished epoch)"
    return "interrupted: nothing saved"


def init_from(config: TrainConfig) -> str | None:
    """The checkpoint to fine-tune from, if any ('none' spelt out means none)."""
    if config.init_from is None or config.init_from.lower() == "none":
        return None
    return config.init_from


def tensorboard_logger(directory: Path) -> Callable[[Loop], None]:
    """Per-epoch scalars for TensorBoard (needs the optional ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
    writer = SummaryWriter(str(directory))

    def log_epoch(loop: Loop) -> None:
        last = loop.history[-1]
        for key, value in last.items():
            if key != "epoch":
                writer.add_scalar(key, value, last["epoch"])
        writer.flush()

    return log_epoch


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    torch.set_num_threads(args.threads or default_threads())
    logging.getLogger(__name__).info("torch threads: %d", torch.get_num_threads())
    output: Path | None = None
    try:
        parallel = distributed.setup(args)  # under torchrun: data-parallel (training/distributed.py)
        config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
        if args.tiny or args.dry_run:
            config = tiny(config)
        config = dataclasses.replace(config, init_from=init_from(config))
        main_process = parallel is None or parallel.is_main  # only rank 0 writes anything
        output = None if args.dry_run or not main_process else output_path(args)
        if output is not None:
            check_output(args, output)
        data, val, test, provenance = load_data(args)
        provenance["code_version"] = code_version()
        provenance["package_version"] = package_version()
        log_epoch = tensorboard_logger(args.tensorboard) if args.tensorboard and main_process else None
        result = train(
            data,
            config,
            output,
            val=val,
            test=test,
            device=args.device,
            resume=args.resume,
            provenance=provenance,
            progress=not args.no_progress,
            on_epoch=log_epoch,
            parallel=parallel,
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted(output)}", file=sys.stderr)
        return 130
    metrics = result.checkpoint.metrics
    print(format_report(metrics["test"], title="test split"))
    print(
        f"training time {metrics['train_seconds']:.1f} s, "
        f"{metrics['train_tokens_per_second']:,.0f} tokens/s, "
        f"best epoch {metrics['best_epoch']}, temperature {result.checkpoint.temperature:.3f}"
    )
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}")
    print(f"saved {result.path}" if result.path else "dry run: nothing saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
