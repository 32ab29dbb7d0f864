"""What a user should know about a run's data before it trains: a summary, and warnings that say
when its validation split or its report cannot be trusted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from training.calibration import MIN_VALIDATION_ROWS
from training.config import TrainConfig
from training.splits import Splits


def _counts(labels: Sequence[str], names: Sequence[str]) -> str:
    counts = Counter(labels)
    return ", ".join(f"{name} {counts[name]:,}" for name in names)


def data_summary(splits: Splits) -> str:
    """Rows, labels with their counts, and split sizes, as a few lines for the terminal."""
    parts = splits.named()
    rows = sum(len(split) for split in parts.values())
    every = [label for split in parts.values() for label in split.labels]
    used = f" used of {rows + splits.unused:,}" if splits.unused else ""
    lines = [f"data: {rows:,} rows{used}, {len(splits.labels)} labels ({_counts(every, splits.labels)})"]
    for name, split in parts.items():
        lines.append(f"  {name:<10} {len(split):>9,} rows ({_counts(split.labels, splits.labels)})")
    if splits.unused:
        lines[1] += f"; {splits.unused:,} more left out by --max-examples"
    return "\n".join(lines)


def split_warnings(splits: Splits, config: TrainConfig) -> list[str]:
    """Problems with the splits themselves, known before the first epoch."""
    warnings = []
    for name, split in splits.named().items():
        present = set(split.labels)
        missing = [label for label in splits.labels if label not in present]
        if missing:
            warnings.append(
                f"the {name} split has no {', '.join(map(repr, missing))} example: its figures say nothing "
                "about that class; add data or pass a --val/--test file that has it"
            )
    if len(splits.val) < MIN_VALIDATION_ROWS:
        what = "to choose the best epoch reliably"
        if config.calibrate:
            what += " or to fit a calibration temperature (probabilities are left uncalibrated)"
        warnings.append(
            f"the validation split has {len(splits.val)} rows, under {MIN_VALIDATION_ROWS}: too few {what}; "
            "add data, raise --val-fraction or pass a --val file"
        )
    return warnings
