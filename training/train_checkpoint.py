"""Model selection and the run's checkpoints: RUN/best.pt and RUN/last.pt after every epoch, written atomically
by rank 0 in an order that a kill at any point leaves consistent."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from training import distributed as D
from training.distributed import DistInfo
from training.train_data import describe
from training.train_options import TrainOptions
from training.train_report import json_safe
from training.train_setup import Trainee, rng_state


def selection_key(val: dict[str, Any] | None) -> tuple[str, tuple[float, ...]]:
    """(what is compared, key: larger is better). AP50 then mean cIoU with boxes; else −val loss."""
    if not val:
        return "last epoch (no validation split)", (0.0,)
    if "val_ap50" in val:
        return "val AP50 (official protocol), then mean cIoU", (val["val_ap50"], val["val_mean_ciou"])
    loss = val.get("val_loss", math.nan)
    return "val contrastive loss", (-loss if math.isfinite(loss) else -math.inf,)


class CheckpointSaver:
    """Keeps the best epoch by `selection_key` and writes the checkpoints of each epoch into `out`."""

    def __init__(
        self,
        out: Path,
        options: TrainOptions,
        data_info: dict[str, Any],
        dist: DistInfo,
        best: dict[str, Any] | None = None,
    ):
        self.out = out
        self.options = options
        self.data_info = data_info
        self.dist = dist
        self.best = best or {"epoch": 0, "key": None}  # 1-based epoch; key None before the first

    def select(self, epoch: int, val: dict[str, Any] | None) -> tuple[str, bool]:
        """(selection criterion, whether epoch `epoch` (0-based) with validation metrics `val` is the best yet)."""
        criterion, key = selection_key(val)
        is_best = self.best["key"] is None or key >= self.best["key"]
        if is_best:
            self.best = {"epoch": epoch + 1, "key": key}
        return criterion, is_best

    def save(
        self,
        trainee: Trainee,
        epoch: int,
        history: list[dict[str, Any]],
        criterion: str,
        is_best: bool,
        wall_seconds: float,
    ) -> None:
        """Write last.pt (and best.pt when `is_best`) after epoch `epoch` (0-based). Every rank calls it: the
        checkpoint holds every rank's random state."""
        from model.checkpoint import atomic_save, make_checkpoint

        options, best = self.options, self.best
        rng_all = D.all_gather_objects(rng_state())
        if not self.dist.is_main:
            return
        checkpoint = make_checkpoint(
            trainee.fnac,
            {
                "model_name": options.name or self.out.name,
                "training_data": describe(self.data_info),
                "trained_epochs": epoch + 1,
                "loss": "contrastive (EZ-VSL baseline)" if options.baseline else "FNAC",
                "selection": criterion,
                **({"initialized_from": str(options.init_from)} if options.init_from else {}),
            },
            optimizer=trainee.optimizer.state_dict(),
            epoch=epoch + 1,
            **({"scaler": trainee.scaler.state_dict()} if trainee.scaler.is_enabled() else {}),
            train_state={
                "options": json_safe(dataclasses.asdict(options)),
                "data": json_safe(self.data_info),
                "history": json_safe(history),
                "best": {"epoch": best["epoch"], "key": list(best["key"])},
                "rng": rng_all,
                "world_size": self.dist.world_size,
                "wall_seconds": wall_seconds,
            },
        )
        # best first: a kill between the two writes leaves last.pt at the previous epoch, which is
        # then redone; the reverse order could leave a best.pt older than what last.pt records.
        if is_best:
            atomic_save(checkpoint, self.out / "best.pt")
        atomic_save(checkpoint, self.out / "last.pt")
