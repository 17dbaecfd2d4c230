"""Training batches with a set in-batch false-negative rate (`fnac train --classes-per-batch M | --fn-rate R`).

A research option for testing FNAC's claim under control. A false negative is an off-diagonal pair (n ≠ m) of a
batch whose two clips show the same class: the contrastive loss pushes it apart although it matches. With
``--classes-per-batch M`` every global batch is drawn from M classes, B/M clips each (the remainder of B/M
spread one clip at a time), so its false-negative rate is Σ n_c (n_c − 1) / (B (B − 1)), about 1/M.
``--fn-rate R`` takes the two neighbouring class counts M and M + 1 whose rates bracket R and draws that share
of the batches from M + 1 classes (spread evenly over the epoch) which makes the epoch's rate R; when some M
gives R exactly, every batch has M classes.

- Class-balanced: the M classes of a batch are dealt from a shuffled deck of all classes, so over an epoch
  every class is drawn about equally often; a class's clips are taken from its own shuffled pool (reshuffled
  when used up, so small classes repeat rather than run dry).
- Seeded: the batches depend only on (seed, epoch), so a resumed run sees the same ones.
- torchrun: every rank builds the same global batches and takes every W-th clip of each (laid out class by
  class), so each rank's share holds the same classes in about equal parts and the global batch, which the
  loss sees whole (training.distributed), has the stated rate.

Classes come from the dataset's own annotations (``annotations.json`` of ``fnac synth``, or ``vggss.json``) or
from ``--class-labels FILE`` (a JSON list of ``{"file": id, "class": name}``, the VGG-SS format). Training
reports the rate it measured on the batches it actually trained on in ``metrics.jsonl`` (``fn_rate``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from training.datasets import DatasetError


def balanced_counts(batch_size: int, classes: int) -> list[int]:
    """Clips per class in a batch of `batch_size` from `classes` classes, as equal as whole clips allow."""
    base, extra = divmod(batch_size, classes)
    return [base + (i < extra) for i in range(classes)]


def pair_rate(counts: Sequence[int]) -> float:
    """Fraction of a batch's off-diagonal pairs that are same-class, for these clips per class."""
    total = sum(counts)
    if total < 2:
        return 0.0
    return sum(n * (n - 1) for n in counts) / (total * (total - 1))


def expected_rate(batch_size: int, classes: int) -> float:
    """The false-negative rate of every batch the sampler draws with `classes` classes per batch."""
    return pair_rate(balanced_counts(batch_size, classes))


def classes_for_rate(rate: float, batch_size: int, n_classes: int) -> tuple[int, float]:
    """(M, share): batches from M classes, and this share of them from M + 1, give `rate` over an epoch.

    Rates outside what the data allows are clipped: 1 class (rate 1) or all `n_classes` (the lowest)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"--fn-rate {rate:g}: a rate is between 0 and 1")
    most = min(n_classes, batch_size)
    for m in range(1, most):
        high, low = expected_rate(batch_size, m), expected_rate(batch_size, m + 1)
        if rate >= high:
            return m, 0.0
        if rate > low:
            return m, (high - rate) / (high - low)
    return most, 0.0


def false_negative_pairs(labels: torch.Tensor) -> tuple[int, int]:
    """(same-class off-diagonal pairs, off-diagonal pairs) of one batch's class labels [B]."""
    n = labels.shape[0]
    same = int((labels[:, None] == labels[None, :]).sum()) - n
    return same, n * (n - 1)


class ClassBatchSampler(Sampler[int]):
    """This rank's sample indices, batch after batch, each global batch drawn from `classes_per_batch` classes
    (`more_classes_share` of them, spread evenly, from one class more).

    Yields ``steps × batch_size / world_size`` indices per epoch (``steps = len(labels) // batch_size``, as
    many full batches as the plain shuffle gives); a DataLoader with ``batch_size = batch_size / world_size``
    (or training.cache.CachedLoader) cuts them into the rank's batches. `labels`: class index per sample.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        classes_per_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        more_classes_share: float = 0.0,
    ):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(self.labels)
        most = classes_per_batch + (more_classes_share > 0)
        if not 1 <= classes_per_batch <= most <= len(self.classes):
            raise DatasetError(
                f"--classes-per-batch {classes_per_batch}: the training set has {len(self.classes)} classes"
            )
        if batch_size % world_size:
            raise ValueError(f"batch {batch_size} is not divisible by {world_size} processes")
        self.batch_size = batch_size
        self.classes_per_batch = classes_per_batch
        self.more_classes_share = more_classes_share
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.steps = len(self.labels) // batch_size
        self.members = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}

    @property
    def rate(self) -> float:
        """The planned false-negative rate, over global batches (exact for an epoch up to rounding the share)."""
        share, m = self.more_classes_share, self.classes_per_batch
        return (1 - share) * expected_rate(self.batch_size, m) + share * expected_rate(self.batch_size, m + 1)

    def classes_in_batch(self, step: int) -> int:
        """Classes of global batch `step`: M, or M + 1 where the running count of such batches rounds up."""
        share = self.more_classes_share
        more = math.floor((step + 1) * share + 0.5) > math.floor(step * share + 0.5)
        return self.classes_per_batch + more

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * (self.batch_size // self.world_size)

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (the same on every rank), each laid out class by class."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = {c: rng.permutation(m) for c, m in self.members.items()}
        used = dict.fromkeys(self.members, 0)
        deck: list[int] = []
        batches = []
        for step in range(self.steps):
            per_batch = self.classes_in_batch(step)
            chosen: list[int] = []
            while len(chosen) < per_batch:
                if not deck:
                    fresh = [int(c) for c in rng.permutation(self.classes)]
                    # a class already in this batch goes to the bottom of the new deck, dealt in a later batch
                    deck = [c for c in fresh if c in chosen] + [c for c in fresh if c not in chosen]
                chosen.append(deck.pop())
            counts = balanced_counts(self.batch_size, per_batch)
            parts = []
            for c, n in zip(chosen, rng.permutation(counts), strict=True):
                taken: list[np.ndarray] = []
                while n > 0:
                    if used[c] == len(pools[c]):
                        fresh = rng.permutation(self.members[c])
                        # clips already in this batch go last: no clip twice in a batch unless its class is
                        # smaller than its share of the batch
                        again = np.isin(fresh, np.concatenate(taken)) if taken else np.zeros(len(fresh), bool)
                        pools[c], used[c] = np.concatenate([fresh[~again], fresh[again]]), 0
                    k = min(n, len(pools[c]) - used[c])
                    taken.append(pools[c][used[c] : used[c] + k])
                    used[c] += k
                    n -= k
                parts += taken
            batches.append(np.concatenate(parts))
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.global_batches():
            yield from (int(i) for i in batch[self.rank :: self.world_size])


def class_labels(
    source: str | Path, ids: Sequence[str], labels_file: str | Path | None = None
) -> tuple[list[int], list[str]]:
    """(class index of each id, class names) from `labels_file` or the annotations beside the data.

    Raises DatasetError (one line) when no labels are found or some ids have none.
    """
    candidates = (
        [Path(labels_file)]
        if labels_file
        else [Path(source) / "annotations.json", Path(source) / "vggss.json"]
    )
    for path in candidates:
        if not path.is_file():
            continue
        records = json.loads(path.read_text())
        if isinstance(records, dict):  # fnac synth's annotations.json
            records = records.get("samples", [])
        by_id = {str(r["file"]): str(r["class"]) for r in records if "file" in r and "class" in r}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DatasetError(
                f"{path} gives no class for {len(missing)} of {len(ids)} training samples (e.g. {missing[0]}); "
                "the class-controlled batches need one for each (--class-labels FILE)"
            )
        names = sorted({by_id[i] for i in ids})
        index = {name: k for k, name in enumerate(names)}
        return [index[by_id[i]] for i in ids], names
    if labels_file:
        raise DatasetError(f"--class-labels {labels_file}: no such file")
    raise DatasetError(
        f"no class labels beside {source} (annotations.json or vggss.json); "
        'pass --class-labels FILE (a JSON list of {"file", "class"})'
    )
