"""Our checkpoint format, and import of the checkpoints released with the official FNAC / EZ-VSL code.

A checkpoint is a plain dict of tensors and builtins, so it loads with ``torch.load(weights_only=True)``:
``{"format": "fnac", "format_version": 1, "config": {...}, "model": state_dict, "metadata": {...}}`` plus, for
training checkpoints, ``"optimizer"``, ``"epoch"`` and ``"train_state"``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from fnac.errors import FnacError
from model.atomic import atomic_path
from model.config import FNACConfig
from model.fnac import FNAC

FORMAT = "fnac"
FORMAT_VERSION = 1


class CheckpointError(FnacError, ValueError):
    """A checkpoint file that cannot be used, with the reason."""


def _first_line(exc: Exception) -> str:
    """torch's load errors run to a page of advice; the first line says what went wrong."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("fnac")
    except Exception:
        return "0+unknown"


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of the parameters (names, shapes and bytes), independent of file format."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(
            tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes()
        )
    return digest.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def make_checkpoint(model: FNAC, metadata: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {"fnac_version": package_version(), "weights_sha256": weights_sha256(state)}
    meta.update(metadata or {})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "model": state,
        "metadata": meta,
        **extra,
    }


def save_checkpoint(
    path: str | os.PathLike, model: FNAC, metadata: dict[str, Any] | None = None, **extra
) -> None:
    atomic_save(make_checkpoint(model, metadata, **extra), path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable FNAC checkpoint ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an FNAC checkpoint of this package; official FNAC/EZ-VSL .pth files must be "
            "converted first with `fnac import`"
        )
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {ckpt['format_version']}, newer than this package")
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[FNAC, dict[str, Any]]:
    """Rebuild the network of a checkpoint in eval mode; returns (model, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = FNAC(FNACConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


# --- official checkpoints -------------------------------------------------------------------------------------

OFFICIAL_PREFIXES = ("imgnet.", "img_proj.", "audnet.", "aud_proj.")


def _load_untrusted(path: Path) -> Any:
    # Official .pth files may pickle their argparse.Namespace; allow exactly that class and nothing else.
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def official_state_dict(raw: Any) -> dict[str, torch.Tensor]:
    """Extract the network weights from an official checkpoint: {"model": sd, ...} or a bare state dict,
    keys possibly prefixed by ``module.`` (DDP)."""
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            "no state dict found (expected {'model': state_dict, ...} or a bare state dict)"
        )
    cleaned = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        cleaned[key] = value
    return cleaned


def infer_config(state: dict[str, torch.Tensor], **overrides: Any) -> FNACConfig:
    """Network widths come from the weights; the input contract from the caller."""
    try:
        width = int(state["imgnet.conv1.weight"].shape[0])
        dim = int(state["img_proj.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"not an FNAC/EZ-VSL network: parameter {exc.args[0]!r} is missing") from exc
    return FNACConfig(width=width, dim=dim, **overrides)


def import_official(
    src: str | os.PathLike,
    *,
    sample_rate: int = FNACConfig.sample_rate,
    tau: float = FNACConfig.tau,
    metadata: dict[str, Any] | None = None,
) -> tuple[FNAC, dict[str, Any], list[str]]:
    """Load an official FNAC / EZ-VSL checkpoint into our network.

    Returns (model, checkpoint dict, notes). Raises CheckpointError naming every missing parameter; parameters
    that are not part of the network are listed in the notes and ignored.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"file not found: {src}")
    try:
        raw = _load_untrusted(src)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {src} safely ({type(exc).__name__}: {_first_line(exc)}); only tensors, dicts and argparse "
            "namespaces are accepted"
        ) from exc
    state = official_state_dict(raw)
    config = infer_config(state, sample_rate=sample_rate, tau=tau)
    model = FNAC(config)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    if missing:
        shown = ", ".join(missing[:8]) + (f" … ({len(missing)} in all)" if len(missing) > 8 else "")
        raise CheckpointError(f"{src}: {len(missing)} network parameters missing: {shown}")
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise CheckpointError(f"{src}: shape mismatch: " + "; ".join(mismatched[:8]))
    model.load_state_dict({k: state[k] for k in expected})
    notes = []
    if unexpected:
        notes.append(
            f"ignored {len(unexpected)} entries that are not network parameters: {', '.join(unexpected[:8])}"
        )
    source_meta = {"source": str(src.name), "imported_from": "official FNAC/EZ-VSL checkpoint"}
    if isinstance(raw, dict) and "epoch" in raw and isinstance(raw["epoch"], int | float):
        source_meta["source_epoch"] = int(raw["epoch"])
    notes.append(
        f"sample rate set to {sample_rate} Hz: the official code used each file's native rate; inputs will be "
        "resampled to this rate"
    )
    meta = {**source_meta, **(metadata or {})}
    return model.eval(), make_checkpoint(model, meta), notes
