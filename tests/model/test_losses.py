"""Each loss term against an independent numpy computation written with explicit loops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.losses import (
    LossWeights,
    audio_adjacency,
    contrastive_loss,
    fnac_loss,
    foreground_features,
    image_adjacency,
    matched_weight,
    pair_logits,
    soft_alignment,
)

TAU = 0.03


def random_embeddings(batch=6, dim=16, h=3, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(batch, dim, h, w, generator=g, dtype=torch.float64), dim=1)
    a = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=1)
    return v, a


def np_softmax_row(m):
    out = np.zeros_like(m)
    for i in range(m.shape[0]):
        e = np.exp(m[i] - m[i].max())
        out[i] = e / e.sum()
    return out


def np_logits(v, a):
    b = v.shape[0]
    out = np.zeros((b, b))
    for n in range(b):
        for m in range(b):
            best = -np.inf
            for y in range(v.shape[2]):
                for x in range(v.shape[3]):
                    best = max(best, float(np.dot(v[n, :, y, x], a[m])) / TAU)
            out[n, m] = best
    return out


def np_cross_entropy_diag(logits):
    total = 0.0
    for i in range(logits.shape[0]):
        row = logits[i]
        total += -(row[i] - (row.max() + np.log(np.exp(row - row.max()).sum())))
    return total / logits.shape[0]


def np_l1_soft(target, logits):
    return float(np.abs(np_softmax_row(target) - np_softmax_row(logits)).mean())


def test_pair_logits_and_contrastive_against_loops():
    v, a = random_embeddings()
    logits = pair_logits(v, a, TAU).numpy()
    expected = np_logits(v.numpy(), a.numpy())
    np.testing.assert_allclose(logits, expected, rtol=1e-10)
    loss = contrastive_loss(torch.from_numpy(expected)).item()
    assert loss == pytest.approx(
        np_cross_entropy_diag(expected) + np_cross_entropy_diag(expected.T), rel=1e-10
    )


def test_contrastive_hand_case():
    # Two pairs, perfectly separated logits: loss = 2·log(1 + e^-Δ) for margin Δ.
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    assert contrastive_loss(logits).item() == pytest.approx(2 * np.log1p(np.exp(-5.0)), rel=1e-12)
    # Uniform logits: each CE = log B.
    assert contrastive_loss(torch.zeros(4, 4)).item() == pytest.approx(2 * np.log(4), rel=1e-6)


def test_fns_terms_against_numpy():
    v, a = random_embeddings(seed=1)
    vn, an = v.numpy(), a.numpy()
    logits = np_logits(vn, an)
    adj_aud = np.array([[np.dot(an[i], an[j]) / TAU for j in range(6)] for i in range(6)])
    g = vn.mean(axis=(2, 3))
    adj_img = np.array([[np.dot(g[i], g[j]) / TAU for j in range(6)] for i in range(6)])
    torch_logits = pair_logits(v, a, TAU)
    fns1 = soft_alignment(audio_adjacency(a, TAU), torch_logits).item()
    fns2 = soft_alignment(image_adjacency(v, TAU), torch_logits).item()
    assert fns1 == pytest.approx(np_l1_soft(adj_aud, logits), rel=1e-9)
    assert fns2 == pytest.approx(np_l1_soft(adj_img, logits), rel=1e-9)


def test_soft_alignment_hand_case():
    same = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert soft_alignment(same, same).item() == 0.0
    # softmax rows of [0, 0] are [.5, .5]; of [big, -big] ≈ [1, 0] → mean |Δ| = 0.5.
    big = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])
    assert soft_alignment(torch.zeros(2, 2), big).item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("batch", [8, 32, 256])
def test_soft_alignment_is_bounded_by_two_over_batch(batch):
    # why FNAC's weight must follow the batch: each row's L1 distance is at most 2, averaged over B² entries
    generator = torch.Generator().manual_seed(batch)
    for _ in range(5):
        a, b = (torch.randn(batch, batch, generator=generator) * 30 for _ in range(2))
        assert soft_alignment(a, b).item() <= 2 / batch + 1e-7
    # rows peaked on different columns reach the bound
    opposite = soft_alignment(torch.eye(batch) * 100, torch.eye(batch).roll(1, dims=1) * 100).item()
    assert opposite == pytest.approx(2 / batch, rel=1e-4)
    # the matched weight keeps weight × bound at the recipe's 100 × 2/256
    assert matched_weight(batch) * 2 / batch == pytest.approx(100 * 2 / 256)


def test_tne_against_numpy():
    v, a = random_embeddings(seed=2)
    vn, an = v.numpy(), a.numpy()
    b, _, h, w = vn.shape
    feats = np.zeros((b, vn.shape[1]))
    for n in range(b):
        loc = np.array([[np.dot(vn[n, :, y, x], an[n]) / TAU for x in range(w)] for y in range(h)])
        norm = (loc - loc.min()) / (loc.max() - loc.min() + 1e-5)
        for y in range(h):
            for x in range(w):
                if norm[y, x] > 0.6:
                    feats[n] += vn[n, :, y, x]
        feats[n] /= h * w  # mean over ALL positions of the masked map
    adj_aud = an @ an.T / TAU
    adj_frg = feats @ feats.T / TAU
    f = foreground_features(v, a, TAU, 0.6)
    np.testing.assert_allclose(f.numpy(), feats, rtol=1e-9, atol=1e-12)
    tne = soft_alignment(audio_adjacency(a, TAU), f @ f.t() / TAU).item()
    assert tne == pytest.approx(np_l1_soft(adj_aud, adj_frg), rel=1e-9)


def test_total_loss_weights_and_warmup():
    v, a = random_embeddings(seed=3)
    weights = LossWeights(warmup_epochs=2)
    warm, parts_warm = fnac_loss(v, a, TAU, epoch=1, weights=weights)
    assert set(parts_warm) == {"contrastive"}
    total, parts = fnac_loss(v, a, TAU, epoch=2, weights=weights)
    expected = parts["contrastive"] + 100 * (parts["fns1"] + parts["fns2"] + parts["tne"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert warm.item() == pytest.approx(parts["contrastive"].item(), rel=1e-12)
    baseline, parts_base = fnac_loss(v, a, TAU, epoch=10, weights=LossWeights(contrastive_only=True))
    assert set(parts_base) == {"contrastive"} and baseline.item() == pytest.approx(warm.item())


def test_gradients_finite_and_reach_both_encoders():
    v_raw = torch.randn(8, 16, 2, 2, dtype=torch.float64, requires_grad=True)
    a_raw = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    total, _ = fnac_loss(F.normalize(v_raw, dim=1), F.normalize(a_raw, dim=1), TAU, epoch=5)
    total.backward()
    for grad in (v_raw.grad, a_raw.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_false_negative_terms_reward_agreeing_with_audio_similarity():
    # Two audio clips that are the same sound: FNS-1 is smaller when their pair logits are alike too.
    a = F.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64), dim=1
    )
    adj = audio_adjacency(a, TAU)
    aware = torch.tensor([[10.0, 10.0, 0.0], [10.0, 10.0, 0.0], [0.0, 0.0, 10.0]], dtype=torch.float64)
    naive = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]], dtype=torch.float64)
    assert soft_alignment(adj, aware) < soft_alignment(adj, naive)
