"""Parametric machine sounds, domain shift, near/far stereo and anomalies for the synthetic set.

A stand-in for DCASE 2026 Task 2 data (real data cannot be downloaded here). Each
machine type is a distinct sound: harmonics of a fundamental tied to a speed-like
attribute, amplitude modulation, impulsive parts (a click train through a damped
resonance) and band-limited broadband noise. The target domain shifts the
attribute values and the background noise. Channel 1 (far) is the source delayed,
attenuated and lightly reverberated, plus more noise, like the real far microphone.

Anomalies: "spectral" (a boosted band), "rattle" (random impacts), "drift" (the
fundamental wanders) and "spatial" (part of the sound radiates from a second
position close to the far microphone: mostly the inter-channel cues change).

Background: a diffuse floor drawn independently per microphone (and a hum on the target
domain) and, by default, point-like interferers that reach both microphones coherently
(asdx.data.scene).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy.signal import butter, oaconvolve, sosfilt

SAMPLE_RATE = 16000
ANOMALY_KINDS = ("spectral", "rattle", "drift", "spatial")
_TABLE_SIZE = 4096
SOURCE_RMS = 0.05  # near-channel machine level before the per-clip gain (about -26 dBFS)


@dataclass(frozen=True)
class AttributeSpec:
    """One domain-shift attribute written in the file names.

    role: "speed" scales the fundamental, modulation and click rates by value / reference;
    "timbre" selects a per-value harmonic profile; "far" scales the far-channel gain.
    """

    key: str
    source: tuple[str, ...]
    target: tuple[str, ...]
    role: str
    reference: float = 1.0


@dataclass(frozen=True)
class SoundSpec:
    """The parametric sound of one machine type (levels relative to the harmonic part)."""

    f0: float
    n_harmonics: int
    decay: float  # harmonic k has amplitude k**-decay
    even_gain: float
    am_hz: float
    am_depth: float
    click_hz: float
    click_resonance: float
    click_level: float
    noise_band: tuple[float, float]
    noise_level: float
    attributes: tuple[AttributeSpec, ...]
    hidden: bool = False  # file names say noAttribute (mirrors the 2024/2025 pattern)


def _speed(key, source, target, reference):
    return AttributeSpec(key, source, target, "speed", reference)


SOUNDS: dict[str, SoundSpec] = {
    "ToyCar": SoundSpec(95, 30, 0.8, 0.7, 8.0, 0.3, 0.0, 0.0, 0.0, (1000, 4000), 0.25, (
        AttributeSpec("car", ("A1", "A2"), ("B1",), "timbre"),
        _speed("spd", ("28V", "31V"), ("35V",), 28.0),
        AttributeSpec("mic", ("1",), ("2",), "far"))),
    "ToyCarEmu": SoundSpec(120, 25, 1.0, 1.2, 6.0, 0.25, 12.0, 2500, 0.6, (800, 3000), 0.2, (
        AttributeSpec("car", ("C1", "C2"), ("D1",), "timbre"),
        _speed("spd", ("6V", "7V"), ("8V",), 6.0))),
    "bearingEmu": SoundSpec(30, 5, 1.5, 1.0, 30.0, 0.5, 105.0, 3200, 0.5, (2000, 6000), 0.8, (
        _speed("vel", ("8", "10"), ("13",), 8.0),
        AttributeSpec("loc", ("A", "B"), ("C",), "timbre")), hidden=True),
    "fan": SoundSpec(50, 8, 1.2, 1.0, 1.0, 0.1, 0.0, 0.0, 0.0, (100, 3000), 1.2, (
        AttributeSpec("m-n", ("W", "X"), ("Y",), "timbre"),
        _speed("spd", ("1000", "1200"), ("1500",), 1000.0))),
    "gearboxEmu": SoundSpec(200, 12, 0.7, 0.9, 10.0, 0.5, 10.0, 1500, 0.3, (500, 2500), 0.3, (
        _speed("volt", ("1.0", "1.3"), ("1.7",), 1.0),
        AttributeSpec("wt", ("30", "60"), ("150",), "timbre"))),
    "sliderEmu": SoundSpec(60, 4, 1.0, 0.5, 3.0, 0.6, 3.0, 1200, 2.0, (500, 2000), 0.5, (
        _speed("vel", ("300", "400"), ("600",), 300.0),
        AttributeSpec("ac", ("0.05", "0.1"), ("0.3",), "timbre")), hidden=True),
    "valveEmu": SoundSpec(100, 6, 1.3, 1.0, 0.5, 0.3, 2.0, 4000, 2.5, (2000, 7000), 0.4, (
        AttributeSpec("pat", ("00", "01"), ("02",), "timbre"),
        _speed("vel", ("2", "3"), ("4",), 2.0))),
    "ToyDrone": SoundSpec(180, 20, 0.6, 1.0, 3.0, 0.4, 0.0, 0.0, 0.0, (500, 5000), 0.6, (
        AttributeSpec("prop", ("P1", "P2"), ("P3",), "timbre"),
        _speed("spd", ("3", "4"), ("5",), 3.0),
        AttributeSpec("mic", ("1",), ("2",), "far"))),
    "ToothBrush": SoundSpec(260, 25, 0.5, 1.3, 2.0, 0.2, 0.0, 0.0, 0.0, (3000, 7000), 0.15, (
        AttributeSpec("mode", ("clean", "soft"), ("white",), "timbre"),
        _speed("spd", ("1", "2"), ("3",), 1.0)), hidden=True),
    "SewingMachine": SoundSpec(50, 15, 0.9, 0.8, 2.0, 0.2, 6.0, 1800, 1.5, (1000, 5000), 0.3, (
        _speed("spd", ("500", "600"), ("800",), 500.0),
        AttributeSpec("fabric", ("cotton", "denim"), ("silk",), "timbre"))),
    "BlowerDustCollector": SoundSpec(110, 6, 1.3, 1.0, 0.5, 0.15, 0.0, 0.0, 0.0, (50, 6000), 1.5, (
        _speed("pow", ("2", "3"), ("4",), 2.0),), hidden=True),
    "Sander": SoundSpec(150, 18, 0.9, 1.1, 15.0, 0.35, 0.0, 0.0, 0.0, (1000, 7000), 0.9, (
        AttributeSpec("grit", ("120", "240"), ("60",), "timbre"),
        _speed("spd", ("10000", "12000"), ("8000",), 10000.0))),
}


def name_code(text: str) -> int:
    """A stable 32-bit code for seeding per machine / attribute value."""
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class Placement:
    """Fixed per machine: where the source sits relative to the far microphone."""

    far_delay: int
    far_gain: float
    far_ir: np.ndarray
    second_ir: np.ndarray


@lru_cache(maxsize=64)
def placement(machine: str, seed: int) -> Placement:
    """The machine's near/far geometry: delay 1-3 ms, gain 0.3-0.5, a short reverberant tail."""
    rng = np.random.default_rng([seed, name_code(machine), 4])
    return Placement(int(rng.integers(16, 49)), float(rng.uniform(0.3, 0.5)),
                     _room_ir(rng, 0.020), _room_ir(rng, 0.012))


def _room_ir(rng: np.random.Generator, tau: float) -> np.ndarray:
    """Direct path plus an exponentially decaying noise tail about 12 dB below it."""
    n = int(0.08 * SAMPLE_RATE)
    tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (tau * SAMPLE_RATE))
    tail[:8] = 0.0
    tail *= 0.25 / np.sqrt(np.sum(tail**2))
    tail[0] = 1.0
    return tail


def _timbre(machine: str, attribute: AttributeSpec, value: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, name_code(machine), 5, name_code(f"{attribute.key}={value}")])
    return np.exp(0.5 * rng.standard_normal(n))


def _number(value: str) -> float:
    match = re.match(r"[-+]?\d+(?:\.\d+)?", value)
    if not match:
        raise ValueError(f"speed attribute value {value!r} has no number.")
    return float(match.group())


@lru_cache(maxsize=256)
def bandpass(low: float, high: float) -> np.ndarray:
    high = min(high, 0.45 * SAMPLE_RATE)
    return butter(2, [low, high], btype="band", fs=SAMPLE_RATE, output="sos")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def coloured_noise(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ f**-slope (0 white, 1 pink, 2 brown) above 20 Hz."""
    spectrum = scipy.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(scipy.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 20.0)
    noise = scipy.fft.irfft(spectrum * freqs ** (-slope / 2.0), n)
    return noise / rms(noise)


def _delay(x: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros_like(x)
    out[samples:] = x[: x.shape[-1] - samples]
    return out


def resonant_impulses(times: np.ndarray, amplitudes: np.ndarray, freq: np.ndarray | float,
                       tau: float, n: int) -> np.ndarray:
    """Damped sinusoids (decay tau seconds) starting at the given sample positions."""
    length = int(5 * tau * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    out = np.zeros(n + length)
    freqs = np.broadcast_to(np.asarray(freq, dtype=float), times.shape)
    for start, amp, f in zip(times, amplitudes, freqs):
        out[start:start + length] += amp * np.exp(-t / tau) * np.sin(2 * np.pi * f * t)
    return out[:n]


BACKGROUNDS = ("scene", "diffuse")
DIFFUSE_FLOOR = {"diffuse": 1.0, "scene": 0.5}  # the diffuse noise level, relative to the diffuse-only set
# The machine's level at the far microphone, relative to the diffuse-only set: in a hall the far
# microphone is near the noise and far from the machine, which it hears 15-19 dB below the near one.
FAR_MACHINE = {"diffuse": 1.0, "scene": 0.35}
HEADROOM = {"diffuse": 1.0, "scene": 0.6}  # the hall is loud: the clip's gain leaves room for its peaks


def render(machine: str, attributes: dict[str, str], domain: str, anomaly: str | None,
           n_samples: int, seed: int, rng: np.random.Generator, background: str = "scene") -> np.ndarray:
    """One stereo clip (2, n_samples) float64 in [-1, 1]: near (channel 0) and far (channel 1).

    background: "scene" (default) adds point-like interferers (asdx.data.scene) over a diffuse
    floor at half the level; "diffuse" is the earlier set: diffuse noise (and a hum on target) only.
    The scene is drawn after everything else, so "diffuse" clips are the earlier ones bit for bit.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background: {background!r} is not one of {BACKGROUNDS}.")
    spec = SOUNDS[machine]
    t = np.arange(n_samples) / SAMPLE_RATE
    speed, far_scale = 1.0, 1.0
    profile = np.ones(spec.n_harmonics)
    for attribute in spec.attributes:
        value = attributes[attribute.key]
        if attribute.role == "speed":
            speed = _number(value) / attribute.reference
        elif attribute.role == "timbre":
            profile = profile * _timbre(machine, attribute, value, spec.n_harmonics, seed)
        elif attribute.role == "far":
            far_scale = 0.8 + 0.4 * (attribute.source + attribute.target).index(value)
    speed *= 1.0 + 0.01 * rng.standard_normal()

    # Harmonic part; a "drift" anomaly lets the fundamental wander by 3-8 %.
    f0 = spec.f0 * speed
    f_inst = np.full(n_samples, f0)
    if anomaly == "drift":
        depth = rng.uniform(0.03, 0.08) * rng.choice([-1.0, 1.0])
        shape = t / t[-1] if rng.random() < 0.5 else np.sin(2 * np.pi * t / t[-1] + rng.uniform(0, 2 * np.pi))
        f_inst = f0 * (1.0 + depth * shape)
    phase = 2 * np.pi * np.cumsum(f_inst) / SAMPLE_RATE
    k = np.arange(1, spec.n_harmonics + 1)
    amps = k ** (-spec.decay) * np.where(k % 2 == 0, spec.even_gain, 1.0) * profile
    amps = amps * (1.0 + 0.05 * rng.standard_normal(k.size)) * (k * f0 * 1.1 < 0.47 * SAMPLE_RATE)
    offsets = rng.uniform(0, 2 * np.pi, k.size)
    # One period as a wavetable, read at the running phase: the waveform is periodic in
    # the phase, and this is ~20x cheaper than one sin() per harmonic and sample.
    grid = np.linspace(0.0, 2 * np.pi, _TABLE_SIZE + 1)
    table = np.sin(np.outer(grid, k) + offsets) @ amps
    harmonic = np.interp(np.mod(phase, 2 * np.pi), grid, table)
    harmonic /= rms(harmonic)
    envelope = 1.0 + spec.am_depth * np.sin(2 * np.pi * spec.am_hz * speed * t + rng.uniform(0, 2 * np.pi))

    noise = sosfilt(bandpass(*spec.noise_band), rng.standard_normal(n_samples))
    source = harmonic * envelope + spec.noise_level * (noise / rms(noise)) * np.sqrt(envelope)
    if spec.click_hz > 0:
        rate = spec.click_hz * speed
        period = SAMPLE_RATE / rate
        starts = np.arange(rng.uniform(0, period), n_samples, period)
        starts = np.clip(starts + rng.normal(0, 0.02 * period, starts.size), 0, n_samples - 1).astype(int)
        clicks = resonant_impulses(starts, 1.0 + 0.2 * rng.standard_normal(starts.size),
                                    spec.click_resonance * (1 + 0.02 * rng.standard_normal()), 0.004, n_samples)
        source = source + spec.click_level * clicks / rms(clicks) if clicks.any() else source
    source /= rms(source)

    if anomaly == "spectral":
        centre = float(np.exp(rng.uniform(np.log(400.0), np.log(6000.0))))
        band = sosfilt(bandpass(centre / 1.26, centre * 1.26), source)
        extra = sosfilt(bandpass(centre / 1.12, centre * 1.12), rng.standard_normal(n_samples))
        source = source + rng.uniform(0.4, 1.2) * band + rng.uniform(0.02, 0.08) * extra / rms(extra)
    elif anomaly == "rattle":
        count = rng.poisson(rng.uniform(4.0, 12.0) * n_samples / SAMPLE_RATE) + 1
        starts = rng.integers(0, n_samples, count)
        source = source + resonant_impulses(starts, rng.uniform(1.5, 4.0, count),
                                             rng.uniform(1500, 6000, count), 0.003, n_samples)

    place = placement(machine, seed)
    near = source.copy()
    far = place.far_gain * far_scale * oaconvolve(_delay(source, place.far_delay), place.far_ir)[:n_samples]
    far = FAR_MACHINE[background] * far
    if anomaly == "spatial":
        # A loose part radiating from a second position next to the far microphone.
        part = _delay(source, int(rng.integers(40, 121)))
        near = near + rng.uniform(0.03, 0.08) * _delay(part, int(rng.integers(15, 41)))
        far = far + rng.uniform(0.6, 1.0) * oaconvolve(_delay(part, int(rng.integers(0, 5))),
                                                       place.second_ir)[:n_samples]

    # Background: diffuse, independent per microphone, louder at the far one; its colour
    # and level are what the target domain changes besides the attributes.
    env_rng = np.random.default_rng([seed, name_code(machine), 6, domain == "target"])
    slope = env_rng.uniform(0.8, 1.4) if domain == "source" else env_rng.uniform(0.0, 0.5)
    level = (0.12 if domain == "source" else 0.25) * 10 ** (rng.uniform(-1.5, 1.5) / 20) * DIFFUSE_FLOOR[background]
    near = near + level * coloured_noise(rng, n_samples, slope)
    far = far + 2.5 * level * coloured_noise(rng, n_samples, slope)
    if domain == "target":
        hum_hz = env_rng.uniform(45.0, 65.0)
        hum = np.sin(2 * np.pi * hum_hz * t) + 0.5 * np.sin(2 * np.pi * 3 * hum_hz * t)
        near, far = near + 0.1 * hum, far + 0.2 * hum

    gain = SOURCE_RMS * 10 ** (rng.uniform(-3.0, 3.0) / 20)
    if background == "scene":
        from asdx.data.scene import interferers  # scene builds on this module's primitives

        for interferer in interferers(machine, domain, n_samples, seed, rng):
            near, far = near + interferer.audio[0], far + interferer.audio[1]
        gain *= HEADROOM[background]
    return np.clip(gain * np.stack([near, far]), -1.0, 1.0 - 2.0**-15)
