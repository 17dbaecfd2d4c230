"""Setting up a training run: the run directory and what it already holds (resume, or weights to start from),
the network with its optimizer, the random streams and the state a resumed run continues from."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.atomic import remove_stale_temporaries
from model.config import FNACConfig
from model.fnac import FNAC
from model.losses import LossWeights
from training.distributed import DistInfo
from training.train_forward import SpecAugment, TrainForward, resolve_amp_dtype
from training.train_options import TrainOptions

log = logging.getLogger("fnac.train")


def local_batch_size(options: TrainOptions, dist: DistInfo) -> int:
    """Each rank's share of the global `--batch-size`."""
    if options.batch_size % dist.world_size:
        raise ValueError(
            f"--batch-size {options.batch_size} (global) is not divisible by {dist.world_size} processes"
        )
    return options.batch_size // dist.world_size


def open_run(
    out: Path, config: FNACConfig, options: TrainOptions, dist: DistInfo
) -> tuple[FNACConfig, dict[str, Any] | None, dict[str, Any] | None]:
    """(network config, checkpoint to resume from, checkpoint to start from): what `out` and `--init-from`
    hold for this run. A checkpoint's config wins over `config`; a run in `out` needs `--resume`."""
    from model.checkpoint import read_checkpoint

    resume_from = None
    last_path = out / "last.pt"
    if dist.is_main and out.is_dir():  # a kill during a checkpoint write leaves its temporary file behind
        for stale in remove_stale_temporaries(out):
            log.info("removed %s, left by an interrupted write", stale.name)
    if options.resume and last_path.is_file():
        resume_from = read_checkpoint(last_path)
        config = stored_config(resume_from, config, f"resuming from {last_path}")
    elif options.resume:
        log.warning("--resume: %s does not exist, starting from scratch", last_path)
    elif last_path.exists():
        raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume or choose another -o")
    init_from = None
    if resume_from is None and options.init_from:
        init_from = read_checkpoint(options.init_from)
        config = stored_config(init_from, config, f"--init-from {options.init_from}")
    return config, resume_from, init_from


def stored_config(checkpoint: dict[str, Any], given: FNACConfig, context: str) -> FNACConfig:
    """The network shape a checkpoint was trained with; it wins over the one given on the command line."""
    saved = FNACConfig.from_dict(checkpoint["config"])
    if saved != given:
        log.warning("%s: using the network config stored there (ignoring the one given)", context)
    return saved


@dataclass
class Trainee:
    """The network being trained and what updates it."""

    fnac: FNAC
    forward: TrainForward  # what DDP wraps
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weights: LossWeights
    amp_dtype: torch.dtype | None


def build_trainee(
    config: FNACConfig, options: TrainOptions, dist: DistInfo, init_from: dict[str, Any] | None
) -> Trainee:
    """The network (the same initial weights on every rank, or `init_from`'s) on the device, with a fresh
    optimizer, grad scaler and the recipe's loss weights."""
    torch.manual_seed(options.seed)  # identical initial weights on every rank
    np.random.seed(options.seed)
    random.seed(options.seed)
    fnac = FNAC(config)
    if init_from is not None:
        fnac.load_state_dict(init_from["model"])
        if dist.is_main:
            log.info(
                "initialised from %s (weights %s)",
                options.init_from,
                init_from.get("metadata", {}).get("weights_sha256", "?")[:12],
            )
    fnac = fnac.to(dist.device)
    amp_dtype = resolve_amp_dtype(options.amp, dist.device)
    spec_augment = SpecAugment(options.freq_mask, options.time_mask) if options.spec_augment else None
    forward = TrainForward(fnac, spec_augment, amp_dtype)
    optimizer = torch.optim.Adam(fnac.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    weights = LossWeights(
        fns1=options.fns1,
        fns2=options.fns2,
        tne=options.tne,
        warmup_epochs=options.warmup_epochs,
        contrastive_only=options.baseline,
    )
    return Trainee(fnac, forward, optimizer, scaler, weights, amp_dtype)


@dataclass
class RunState:
    """Where a run stands: the epochs done, their metrics rows, the best one, the time already spent."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "key": None})
    elapsed_before: float = 0.0  # wall seconds of the runs before this one (resume)


def start_state(
    trainee: Trainee,
    resume_from: dict[str, Any] | None,
    options: TrainOptions,
    dist: DistInfo,
    out: Path,
) -> RunState:
    """The state to start from: `resume_from`'s (weights, optimizer, history, random streams) or a fresh one;
    either way each rank's random stream is set for the augmentations to come."""
    if resume_from is None:
        torch.manual_seed(options.seed + 1 + dist.rank)  # per-rank augmentation streams
        return RunState()
    trainee.fnac.load_state_dict(resume_from["model"])
    trainee.optimizer.load_state_dict(resume_from["optimizer"])
    if "scaler" in resume_from and trainee.scaler.is_enabled():
        trainee.scaler.load_state_dict(resume_from["scaler"])
    state = resume_from["train_state"]
    start_epoch = int(resume_from["epoch"])
    best = dict(state["best"])
    best["key"] = tuple(best["key"]) if best["key"] is not None else None
    run_state = RunState(
        start_epoch=start_epoch,
        history=list(state["history"]),
        best=best,
        elapsed_before=float(state.get("wall_seconds", 0.0)),
    )
    rng = state.get("rng", [])
    if len(rng) == dist.world_size:
        set_rng_state(rng[dist.rank])
    else:
        torch.manual_seed(options.seed + 7919 * (start_epoch + 1) + dist.rank)
    if dist.is_main:
        log.info("resumed from %s after epoch %d", out / "last.pt", start_epoch)
    return run_state


def distribute(forward: TrainForward, dist: DistInfo) -> nn.Module:
    """`forward` wrapped in DDP under torchrun, else itself."""
    if not dist.enabled:
        return forward
    return nn.parallel.DistributedDataParallel(
        forward, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
    )


def rng_state() -> dict[str, Any]:
    """This process's torch, numpy, Python (and CUDA) random states, as a checkpoint keeps them."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
