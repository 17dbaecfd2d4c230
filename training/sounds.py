"""The sounds of the synthetic benchmark (`fnac synth`): each class's harmonic tone and rhythm, scene audio with
noise, and the plain-noise negatives."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.synth import SynthConfig


def class_sound(
    rng: np.random.Generator, cls: dict, cfg: SynthConfig, n_samples: int
) -> tuple[np.ndarray, dict]:
    """One instance of a class's sound (float64, peak 1): harmonic tone × rhythm envelope, per-sample jitter."""
    sr = cfg.sample_rate
    t = np.arange(n_samples) / sr
    f0 = cls["f0"] * 2 ** (rng.normal(0, cfg.pitch_jitter_semitones) / 12)
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sr
    n = np.arange(1, cls["n_harmonics"] + 1)
    if cls["timbre"] == "saw":
        amps = 1 / n
    elif cls["timbre"] == "odd":
        amps = np.where(n % 2 == 1, 1 / n, 0.0)
    else:  # formant: energy peaks around the 3rd harmonic
        amps = np.exp(-0.5 * ((n - 3) / 1.2) ** 2)
    amps = amps * (n * f0 < sr / 2 * 0.9)  # no aliasing
    amps = amps * np.exp(rng.normal(0, 0.1, amps.shape))
    tone = amps @ np.sin(np.outer(n, phase) + rng.uniform(0, 2 * np.pi, (n.size, 1)))
    rate = cls["rate_hz"] * rng.uniform(0.9, 1.1)
    beat = (rate * t + rng.random()) % 1.0  # position inside the current beat, 0..1
    if cls["rhythm"] == "steady":
        envelope = np.ones_like(t)
    elif cls["rhythm"] == "tremolo":
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * beat)
    elif cls["rhythm"] == "pulses":
        envelope = np.clip((0.5 - np.abs(beat - 0.25)) * 20, 0, 1) * (beat < 0.5) + 0.05
    else:  # plucks: sharp attack, exponential decay each beat
        envelope = np.exp(-beat * 6.0) * np.clip(beat * 200, 0, 1)
    sound = tone * envelope
    peak = np.abs(sound).max()
    return sound / max(peak, 1e-9), {"f0": round(float(f0), 2), "rate_hz": round(float(rate), 3)}


def scene_audio(rng: np.random.Generator, cls: dict, cfg: SynthConfig) -> tuple[np.ndarray, dict]:
    """Sound of the class + white noise at a random SNR, scaled to a random peak level in [0.3, 0.9]."""
    n_samples = round(cfg.sample_rate * cfg.clip_seconds)
    sound, params = class_sound(rng, cls, cfg, n_samples)
    snr_db = rng.uniform(*cfg.snr_db)
    noise = rng.normal(0, 1, n_samples) * np.sqrt(np.mean(sound**2) / 10 ** (snr_db / 10))
    mix = sound + noise
    mix = mix / np.abs(mix).max() * rng.uniform(0.3, 0.9)
    return mix, {**params, "snr_db": round(float(snr_db), 2)}


NOISE_COLOURS = ("white", "uniform", "pink")
NOISE_DBFS = (-40.0, -5.0)  # RMS level range of the noise negatives: barely audible to full-scale hiss


def unit_noise(rng: np.random.Generator, colour: str, shape: int | tuple[int, ...]) -> np.ndarray:
    """Noise of one of NOISE_COLOURS at unit RMS along the last axis: white (Gaussian), uniform, or pink (white
    noise's spectrum shaped by 1/sqrt(f), so power falls 3 dB per octave; no DC)."""
    if colour == "uniform":
        noise = rng.uniform(-1, 1, shape)
    elif colour == "pink":
        n_samples = shape if isinstance(shape, int) else shape[-1]
        spectrum = np.fft.rfft(rng.normal(0, 1, shape), axis=-1)
        spectrum[..., 1:] /= np.sqrt(np.arange(1, spectrum.shape[-1]))
        spectrum[..., 0] = 0
        noise = np.fft.irfft(spectrum, n_samples, axis=-1)
    elif colour == "white":
        noise = rng.normal(0, 1, shape)
    else:
        raise ValueError(f"unknown noise colour {colour!r}; expected one of {NOISE_COLOURS}")
    rms = np.sqrt(np.mean(noise**2, axis=-1, keepdims=True))
    return noise / np.maximum(rms, 1e-12)


def plain_noise(rng: np.random.Generator, n_samples: int) -> tuple[np.ndarray, dict]:
    """A "plain noise" negative: white (Gaussian), uniform or pink (1/f power) noise at an RMS level drawn
    uniformly in dB from NOISE_DBFS, clipped to [-1, 1]; the parameters record the level after clipping.

    The level spans the whole range users send, up to full-scale hiss, because a calibrated `sounding`
    threshold only holds for the levels it was calibrated on.
    """
    colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
    level_dbfs = rng.uniform(*NOISE_DBFS)
    noise = np.clip(unit_noise(rng, colour, n_samples) * 10 ** (level_dbfs / 20), -1, 1)
    played_dbfs = 20 * np.log10(np.sqrt(np.mean(noise**2)))  # clipping takes a little off the loudest
    return noise, {"colour": colour, "level_dbfs": round(float(played_dbfs), 2)}
