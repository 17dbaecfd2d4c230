"""The options of a training run (`TrainOptions`) and the `fnac train` command line that sets them."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from model.config import FNACConfig
from model.losses import RECIPE_BATCH, LossWeights


@dataclass
class TrainOptions:
    """Everything about a run except the network's shape (FNACConfig) and the paths."""

    epochs: int = 20
    batch_size: int = 128  # global batch (all ranks together)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # the loss weights' defaults are LossWeights' (model/losses.py), not copies
    warmup_epochs: int = LossWeights.warmup_epochs
    fns1: float = LossWeights.fns1
    fns2: float = LossWeights.fns2
    tne: float = LossWeights.tne
    baseline: bool = LossWeights.contrastive_only  # contrastive only (EZ-VSL)
    spec_augment: bool = True
    freq_mask: int = 10  # mask widths are drawn from [0, freq_mask)
    time_mask: int = 10
    audio_window: str = "center"  # or "random" (random offset inside longer stored audio)
    seed: int = 0
    workers: int = 4  # DataLoader processes per rank
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU) | bf16 | fp16 | off
    device: str | None = None  # cpu | cuda | None (cuda when available)
    train_split: str = "train"
    val_split: str = "val"
    val_data: str | None = None  # a separate validation source (directory or manifest)
    val_fraction: float = 0.0  # hold out this fraction of train when there is no validation split
    val_batch_size: int | None = None
    max_samples: int | None = None  # use only the first N training samples (quick runs)
    interpolation: str = "bicubic"  # heatmap upsampling for validation cIoU (official train-time choice)
    resume: bool = False
    progress: bool = True
    name: str | None = None
    log_every: int = 10  # steps between loss-curve points
    cache: bool = False  # decode the training set once, augment batches on the device (training/cache.py)
    cache_dir: str | None = None  # keep the decoded arrays here, shared by later runs on the same data
    # start from these weights (a checkpoint, e.g. from `fnac import`), with a new optimizer
    init_from: str | None = None
    # research option: batches drawn from this many classes, or from the number nearest this false-negative
    # rate (training/sampler.py); classes from the data's annotations or this file
    classes_per_batch: int | None = None
    fn_rate: float | None = None
    class_labels: str | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `fnac train`."""
    defaults = TrainOptions()
    model_defaults = FNACConfig()
    p.add_argument(
        "--data", required=True, help="dataset directory (VGG-SS or Flickr layout) or manifest CSV"
    )
    p.add_argument(
        "-o", "--output", required=True, help="run directory (best.pt, last.pt, metrics.jsonl, curve.png)"
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, default=defaults.epochs, help="default %(default)s")
    g.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="GLOBAL batch over all processes (default %(default)s)",
    )
    g.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="default %(default)s")
    g.add_argument(
        "--warmup-epochs",
        type=int,
        default=defaults.warmup_epochs,
        help="contrastive-only epochs before FNS/TNE (default %(default)s)",
    )
    g.add_argument(
        "--fns1",
        type=float,
        default=defaults.fns1,
        help=f"FNS-1 weight (audio adjacency; default %(default)s, the official recipe's at its global batch of "
        f"{RECIPE_BATCH}; the terms are bounded by 2/batch, so a smaller batch wants 100*batch/{RECIPE_BATCH}, "
        "and training warns)",
    )
    g.add_argument(
        "--fns2",
        type=float,
        default=defaults.fns2,
        help="FNS-2 weight (image adjacency; default %(default)s)",
    )
    g.add_argument("--tne", type=float, default=defaults.tne, help="TNE weight (default %(default)s)")
    g.add_argument("--baseline", action="store_true", help="contrastive loss only (the EZ-VSL baseline)")
    g.add_argument(
        "--no-spec-augment", dest="spec_augment", action="store_false", help="no spectrogram masks"
    )
    g.add_argument(
        "--freq-mask",
        type=int,
        default=defaults.freq_mask,
        help="max frequency-mask width, exclusive (default %(default)s)",
    )
    g.add_argument(
        "--time-mask",
        type=int,
        default=defaults.time_mask,
        help="max time-mask width, exclusive (default %(default)s)",
    )
    g.add_argument(
        "--audio-window",
        choices=["center", "random"],
        default=defaults.audio_window,
        help="training audio window: centred as the reference (default) or at a random offset in longer audio",
    )
    g.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    g.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the weights of this checkpoint (e.g. an official model after `fnac import`, or a "
        "finished run for a lower-learning-rate phase); the optimizer starts fresh and the network shape "
        "comes from the checkpoint",
    )
    g = p.add_argument_group("network (stored in the checkpoint)")
    g.add_argument(
        "--width", type=int, default=model_defaults.width, help="ResNet-18 base width (64 = paper)"
    )
    g.add_argument("--dim", type=int, default=model_defaults.dim, help="embedding dimension (512 = paper)")
    g.add_argument(
        "--image-size", type=int, default=model_defaults.image_size, help="input side S (224 = paper)"
    )
    g.add_argument(
        "--sample-rate", type=int, default=model_defaults.sample_rate, help="model sample rate, Hz"
    )
    g.add_argument("--clip-seconds", type=float, default=model_defaults.clip_seconds, help="audio window, s")
    g.add_argument(
        "--tau", type=float, default=model_defaults.tau, help="temperature τ (default %(default)s)"
    )
    g.add_argument(
        "--dropout-img",
        type=float,
        default=model_defaults.dropout_img,
        help="visual dropout (default %(default)s)",
    )
    g = p.add_argument_group("data and validation")
    g.add_argument("--train-split", default=defaults.train_split, help="default %(default)s")
    g.add_argument(
        "--val-split",
        default=defaults.val_split,
        help="model selection split (default %(default)s; never test)",
    )
    g.add_argument("--val-data", help="separate validation dataset (directory or manifest)")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="hold out this fraction of train when there is no validation split",
    )
    g.add_argument(
        "--val-batch-size", type=int, help="validation batch per process (default: the training one)"
    )
    g.add_argument(
        "--interpolation",
        choices=["bicubic", "bilinear"],
        default=defaults.interpolation,
        help="heatmap upsampling for validation cIoU (default %(default)s)",
    )
    g.add_argument("--max-samples", type=int, help="use only the first N training samples")
    g = p.add_argument_group(
        "false-negative control (research option; training/sampler.py)",
        "draw every global batch from a few classes, class-balanced and seeded, to set how many of its pairs "
        "are same-class (false negatives for the contrastive loss); metrics.jsonl reports the measured rate",
    )
    g.add_argument(
        "--classes-per-batch", type=int, metavar="M", help="each batch from M classes (rate about 1/M)"
    )
    g.add_argument("--fn-rate", type=float, metavar="R", help="in-batch false-negative rate: the nearest M")
    g.add_argument(
        "--class-labels",
        metavar="FILE",
        help='classes of the training samples (JSON list of {"file", "class"}); default: the data\'s '
        "annotations.json or vggss.json",
    )
    g.add_argument(
        "--cache",
        action="store_true",
        help="decode the training set once and crop/flip whole batches on the device (same augmentation); "
        "the decoded arrays stay in host memory (memory-mapped with --cache-dir) and the next batch is gathered "
        "in a background thread. Pays where the loaders limit training, as for small networks on a GPU "
        "(docs/BENCHMARKS.md)",
    )
    g.add_argument(
        "--cache-dir",
        help="with --cache: keep the decoded arrays here so later runs on the same data reuse them",
    )
    g = p.add_argument_group("execution")
    g.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="loader processes per rank (default %(default)s)",
    )
    g.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    g.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=defaults.amp,
        help="autocast on GPU (default %(default)s; CPU always fp32)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument(
        "--log-every", type=int, default=defaults.log_every, help="steps between loss-curve points"
    )
    g.add_argument("--name", help="model name recorded in the checkpoint (default: run directory name)")


def options_from_args(args: argparse.Namespace) -> tuple[FNACConfig, TrainOptions]:
    """(network config, run options) from the parsed `fnac train` arguments."""
    config = FNACConfig(
        width=args.width,
        dim=args.dim,
        image_size=args.image_size,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        tau=args.tau,
        dropout_img=args.dropout_img,
    )
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    if options.cache_dir:
        options.cache = True
    if options.classes_per_batch is not None and options.fn_rate is not None:
        raise ValueError("--classes-per-batch and --fn-rate set the same thing; give one")
    if options.val_split == "test":
        raise ValueError(
            "--val-split test: model selection on the test split is the official pitfall; use val"
        )
    return config, options
