"""`fnac train --data DIR -o RUN`: the FNAC training recipe (or the EZ-VSL contrastive baseline).

Recipe (docs/METHOD.md, "Training recipe"): Adam lr 1e-4, weight decay 1e-4; contrastive loss alone for the
warm-up epochs, then contrastive + 100·FNS-1 + 100·FNS-2 + 100·TNE; image augmentation Resize(1.1·S) bicubic →
RandomCrop(S) → HFlip (in the dataset); one frequency mask and one time mask (width < 10 bins, filled with 0)
per example on the spectrogram the model's own front end computes, batched.

Runs as one process or under ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPU). ``--batch-size`` is the
GLOBAL batch: each rank loads its share, and v and a are all-gathered with gradients so the contrastive
negatives and the FNS/TNE adjacencies cover the whole global batch. Only rank 0 writes. For example
``torchrun --nproc_per_node 4 -m training.train --data DIR -o RUN`` (or ``torchrun ... $(which fnac) train ...``;
multi-node with torchrun's usual ``--nnodes/--node_rank/--rdzv_endpoint``).

Every epoch: validation on the VALIDATION split (official-protocol AP50 / mean cIoU when it has boxes, else the
contrastive loss and in-batch retrieval accuracy; never the test split), then ``RUN/best.pt`` and
``RUN/last.pt`` written atomically, ``RUN/metrics.jsonl`` and ``RUN/curve.png`` rewritten. ``--resume``
continues from ``RUN/last.pt``: a kill mid-epoch loses at most that epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from model.config import FNACConfig
from training import distributed as D
from training.train_checkpoint import CheckpointSaver, selection_key
from training.train_data import build_datasets, train_loader
from training.train_epoch import train_one_epoch
from training.train_options import TrainOptions, add_arguments, options_from_args
from training.train_report import (
    collapse_warning,
    epoch_line,
    epoch_row,
    run_summary,
    small_batch_warning,
    write_curve,
    write_metrics,
    write_summary,
)
from training.train_setup import build_trainee, distribute, local_batch_size, open_run, start_state
from training.train_validate import validate

log = logging.getLogger("fnac.train")


def train(
    config: FNACConfig,
    data: str | Path,
    out: str | Path,
    options: TrainOptions | None = None,
) -> dict[str, Any]:
    """Train on `data` (directory or manifest) into `out`; returns the summary (also in RUN/summary.json).

    Works in-process (tests, benchmarks) and under torchrun (every rank calls it).
    """
    options = options or TrainOptions()
    out = Path(out)
    owns_group = not torch.distributed.is_initialized()  # leave a caller's process group alone
    dist = D.setup(options.device)
    started = time.perf_counter()
    try:
        local_batch = local_batch_size(options, dist)
        config, resume_from, init_from = open_run(out, config, options, dist)
        trainee = build_trainee(config, options, dist, init_from)
        if dist.is_main and (warning := small_batch_warning(trainee.weights, options.batch_size)):
            log.warning(warning)

        train_set, val_set, data_info = build_datasets(data, config, options)
        if len(train_set) < options.batch_size:
            raise ValueError(
                f"{len(train_set)} training samples is fewer than one batch of {options.batch_size}"
            )
        state = start_state(trainee, resume_from, options, dist, out)
        history = state.history
        saver = CheckpointSaver(out, options, data_info, dist, best=state.best)
        model = distribute(trainee.forward, dist)
        loader, sampler, class_of = train_loader(data, train_set, config, local_batch, options, dist)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            log.info(
                "training on %d samples (%s), validating on %d, global batch %d over %d process(es), device %s%s",
                len(train_set),
                data_info["layout"],
                data_info["val_samples"],
                options.batch_size,
                dist.world_size,
                dist.device,
                f", autocast {trainee.amp_dtype}" if trainee.amp_dtype else "",
            )

        global_step = history[-1]["global_step"] if history else 0
        for epoch in range(state.start_epoch, options.epochs):
            stats = train_one_epoch(model, trainee, loader, epoch, global_step, class_of, options, dist)
            global_step = stats.global_step
            val = (
                validate(trainee.fnac, val_set, dist, options, trainee.amp_dtype)
                if val_set is not None
                else None
            )
            criterion, is_best = saver.select(epoch, val)
            row = epoch_row(
                epoch,
                stats,
                val,
                options=options,
                dist=dist,
                sampler=sampler,
                lr=trainee.optimizer.param_groups[0]["lr"],
                wall_seconds=state.elapsed_before + time.perf_counter() - started,
                best_epoch=saver.best["epoch"],
                selection=criterion,
            )
            history.append(row)
            saver.save(trainee, epoch, history, criterion, is_best, row["wall_seconds"])
            if dist.is_main:
                write_metrics(out, history)
                write_curve(out, history)
                log.info("epoch %d: %s", epoch + 1, epoch_line(row))
                if warning := collapse_warning(row):
                    log.warning("epoch %d: %s", epoch + 1, warning)
            D.barrier()

        summary = run_summary(
            history,
            saver.best["epoch"],
            selection_key(history[-1] if history else None)[0],
            options.epochs,
            state.elapsed_before + time.perf_counter() - started,
            data_info,
            out,
        )
        if dist.is_main and history:
            write_summary(out, summary)
        return summary
    finally:
        if owns_group:
            D.teardown()


def run(args: argparse.Namespace) -> int:
    """`fnac train` entry point."""
    config, options = options_from_args(args)
    try:
        summary = train(config, args.data, args.output, options)
    except FileExistsError as exc:
        print(f"fnac train: error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary.get("best", {})
        print(
            f"trained {summary['epochs']} epochs in {summary['wall_seconds']:.0f} s; best epoch "
            f"{summary['best_epoch']} by {summary['selection']}: "
            + ", ".join(
                f"{k} {best[k]:.4f}"
                for k in ("val_ap50", "val_mean_ciou", "val_loss")
                if best.get(k) is not None
            )
            + f"; wrote {Path(args.output) / 'best.pt'} and last.pt"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
