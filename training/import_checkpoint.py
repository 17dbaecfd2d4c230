"""`fnac import SRC -o OUT.pt`: an official FNAC / EZ-VSL checkpoint as an fnac checkpoint.

Reads checkpoints released with the official FNAC and EZ-VSL code ({'model': state_dict, ...}, keys possibly
prefixed 'module.', or a bare state dict), names any missing parameter, and writes our .pt with the model config
and metadata. The official code never resampled audio; choose the rate your inputs will be resampled to.
"""

from __future__ import annotations

import argparse
import sys

from model.config import FNACConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="official .pth file")
    p.add_argument("-o", "--output", required=True, help="fnac checkpoint to write (.pt)")
    p.add_argument(
        "--sample-rate",
        type=int,
        default=FNACConfig.sample_rate,
        help="model sample rate in Hz (default %(default)s)",
    )
    p.add_argument("--tau", type=float, default=FNACConfig.tau, help="temperature τ (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import atomic_save, import_official

    _, ckpt, notes = import_official(args.src, sample_rate=args.sample_rate, tau=args.tau)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    atomic_save(ckpt, args.output)
    cfg = ckpt["config"]
    print(
        f"wrote {args.output} (width {cfg['width']}, dim {cfg['dim']}, {cfg['sample_rate']} Hz, τ {cfg['tau']})"
    )
    return 0
