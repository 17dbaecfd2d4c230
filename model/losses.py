"""FNAC training objective: the EZ-VSL multiple-instance contrastive loss plus the false-negative terms.

Shapes: v [B, D, h, w] (unit norm over D), a [B, D] (unit norm). All terms follow docs/METHOD.md, "Training objective".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.fnac import localization_map, similarity

# The global batch of the official training scripts, for which FNAC's weights of 100 were chosen.
RECIPE_BATCH = 256


def matched_weight(global_batch: int) -> float:
    """The FNS/TNE weight that pulls at `global_batch` as hard as the recipe's 100 does at RECIPE_BATCH.

    Each term is a mean-reduced L1 distance between row-softmaxes of B×B matrices, so at most 2/B: the same
    weight pulls harder at a smaller batch (100 at batch 32 acts like 800 at 256)."""
    return 100.0 * global_batch / RECIPE_BATCH


@dataclass(frozen=True)
class LossWeights:
    fns1: float = 100.0  # audio adjacency → inter-modal logits
    fns2: float = 100.0  # image adjacency → inter-modal logits
    tne: float = 100.0  # audio adjacency → foreground-feature adjacency
    warmup_epochs: int = 3  # contrastive only before this epoch
    foreground_threshold: float = 0.6
    contrastive_only: bool = False  # the EZ-VSL baseline


def pair_logits(v: torch.Tensor, a: torch.Tensor, tau: float) -> torch.Tensor:
    """L[n, m] = max over positions of S[n, m] (multiple-instance max pooling), [B, B]."""
    return similarity(v, a, tau).flatten(2).amax(dim=2)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """CE(L, diag) + CE(Lᵀ, diag): image→audio and audio→image."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def audio_adjacency(a: torch.Tensor, tau: float) -> torch.Tensor:
    return a @ a.t() / tau  # [B, B]


def image_adjacency(v: torch.Tensor, tau: float) -> torch.Tensor:
    g = v.mean(dim=(2, 3))  # [B, D], spatial mean of the visual map
    return g @ g.t() / tau


def soft_alignment(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the row-softmaxes of two B×B matrices."""
    return F.l1_loss(F.softmax(target_logits, dim=1), F.softmax(logits, dim=1))


def foreground_features(v: torch.Tensor, a: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """f[n] = mean over all positions of v[n] masked to where its own normalised map exceeds `threshold`."""
    loc = localization_map(v, a, tau)  # [B, h, w]
    low = loc.amin(dim=(1, 2), keepdim=True)
    high = loc.amax(dim=(1, 2), keepdim=True)
    norm = (loc - low) / (high - low + 1e-5)
    mask = (norm > threshold).to(v.dtype)[:, None]  # [B, 1, h, w]
    return (v * mask).mean(dim=(2, 3))  # [B, D]


def fnac_loss(
    v: torch.Tensor, a: torch.Tensor, tau: float, epoch: int, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its detached parts. Contrastive only during warm-up or in the baseline."""
    logits = pair_logits(v, a, tau)
    loss_nce = contrastive_loss(logits)
    parts = {"contrastive": loss_nce.detach()}
    if weights.contrastive_only or epoch < weights.warmup_epochs:
        return loss_nce, parts
    adj_aud = audio_adjacency(a, tau)
    fns1 = soft_alignment(adj_aud, logits)
    fns2 = soft_alignment(image_adjacency(v, tau), logits)
    f = foreground_features(v, a, tau, weights.foreground_threshold)
    tne = soft_alignment(adj_aud, f @ f.t() / tau)
    total = loss_nce + weights.fns1 * fns1 + weights.fns2 * fns2 + weights.tne * tne
    parts.update(fns1=fns1.detach(), fns2=fns2.detach(), tne=tne.detach())
    return total, parts
