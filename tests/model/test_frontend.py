import numpy as np
import pytest
import scipy.signal
import torch

from model.frontend import ImageNormalize, LogSpectrogram, tukey_window


def signals(sample_rate: int, seconds: float = 3.0):
    rng = np.random.default_rng(sample_rate)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    yield "noise", rng.uniform(-1, 1, t.size)
    yield "tone", 0.8 * np.sin(2 * np.pi * 440 * t)
    yield "chirp", 0.5 * scipy.signal.chirp(t, 50, seconds, sample_rate / 2.5)
    yield "silence", np.zeros(t.size)
    yield "offset+clicks", 0.3 + 0.6 * (rng.uniform(size=t.size) > 0.999)
    yield "quiet", 1e-4 * rng.standard_normal(t.size)


def test_window_equals_scipy_default():
    for n in (256, 512, 511):
        np.testing.assert_allclose(tukey_window(n), scipy.signal.get_window(("tukey", 0.25), n), atol=1e-12)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100])
def test_log_spectrogram_matches_scipy(sample_rate):
    front = LogSpectrogram(sample_rate)
    for name, x in signals(sample_rate):
        _, _, power = scipy.signal.spectrogram(x, sample_rate, nperseg=512, noverlap=274)
        expected = np.log(power + 1e-7)
        got = front(torch.tensor(x, dtype=torch.float32)[None])[0, 0].double().numpy() * 12.0
        assert got.shape == expected.shape, name
        assert np.abs(got - expected).max() <= 1e-4, (name, np.abs(got - expected).max())


def test_spectrogram_shape_of_the_paper():
    spec = LogSpectrogram(16000)(torch.zeros(2, 48000))
    assert spec.shape == (2, 1, 257, 200)
    # log(1e-7) / 12 for silence
    assert torch.allclose(spec, torch.full_like(spec, np.log(1e-7) / 12))


def test_batched_equals_single():
    front = LogSpectrogram(16000)
    x = torch.randn(4, 48000) * 0.2
    batched = front(x)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], front(x[i : i + 1]), rtol=0, atol=1e-5)


def test_image_normalize_matches_torchvision_formula():
    img = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    out = ImageNormalize()(img)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (img.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
