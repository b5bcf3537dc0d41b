"""Point-like interferers for the synthetic set: the noise of a hall, not a hiss.

DCASE 2026 Task 2 is noise-aware: microphone 0 is near the machine, microphone 1
far from it and near the surrounding noise. Noise that is drawn independently per
microphone cannot be predicted from one channel by the other, so a near/far
residual (near minus what the far channel predicts linearly, per frequency) could
not help on it. Real halls are made of sources: other machines, impacts, fans,
people talking. Each interferer here is one source signal that reaches both
microphones coherently, through its own delay and short room-like impulse response
per microphone, louder at the far one (the interferers stand near it), and it
comes and goes within a clip.

A *hall* is fixed per (seed, machine, domain), as a recording site is: its mix of
interferer kinds, their level and a few sound parameters. The target domain is
another hall (more voices and impacts, louder, another fan), so the domains differ in
their noise as well as in the machine's attributes. Each clip draws which
interferers are on, where they stand and when they sound from its own Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt

from asdx.data.sounds import SAMPLE_RATE, bandpass, resonant_impulses, rms, name_code

INTERFERER_KINDS = ("machine", "impacts", "fan", "voice")
# Mix of kinds per domain (Dirichlet means) and the hall level at the far microphone,
# relative to the machine's unit RMS at the near one.
_HALL_MIX = {"source": (0.40, 0.15, 0.35, 0.10), "target": (0.15, 0.30, 0.15, 0.40)}
_HALL_LEVEL = {"source": 2.5, "target": 3.0}
NEAR_LOSS_DB = (3.0, 8.0)  # an interferer at the near microphone, below its level at the far one
CREST = 4.0  # largest peak / RMS of an interferer at its source
_HALL_COUNT = {"source": 2.0, "target": 3.0}  # mean interferers per clip (1 + Poisson(mean - 1))
# Vowel formants (Hz), after Peterson & Barney (1952), for the voice-like bands.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


@dataclass(frozen=True)
class Hall:
    """The noise site of one (machine, domain): fixed for every clip of it."""

    mix: np.ndarray  # probability of each INTERFERER_KINDS entry
    level: float  # summed interferer RMS at the far microphone (machine near RMS = 1)
    count: float
    fan_hz: float  # blade-pass frequency of the hall's fan
    machine_f0: tuple[float, ...]  # fundamentals of the other machines that may run


def hall(machine: str, domain: str, seed: int) -> Hall:
    rng = np.random.default_rng([seed, name_code(machine), 8, domain == "target"])
    mix = rng.dirichlet(20.0 * np.asarray(_HALL_MIX[domain]))
    return Hall(mix, _HALL_LEVEL[domain] * 10 ** (rng.uniform(-2.0, 2.0) / 20), _HALL_COUNT[domain],
                float(rng.uniform(80.0, 240.0)), tuple(float(f) for f in rng.uniform(40.0, 300.0, 3)))


@dataclass(frozen=True)
class Route:
    """The route of one interferer to the two microphones: (near, far) delays in samples and sparse FIRs."""

    delays: tuple[int, int]
    gains: tuple[float, float]
    taps: tuple[np.ndarray, np.ndarray]  # tap positions (samples after the direct path)
    weights: tuple[np.ndarray, np.ndarray]  # tap weights; the direct path (position 0) has weight 1


def random_route(rng: np.random.Generator) -> Route:
    """A source near the far microphone: it arrives there first (0-8 samples), at the near one
    1-3 ms later and 3-8 dB weaker; each microphone hears it through a direct path and 5-8
    reflections within 15 ms that decay (tau 4 ms) with random signs."""
    far_delay = int(rng.integers(0, 9))
    near_delay = far_delay + int(rng.integers(16, 49))
    near_gain = 10 ** (-rng.uniform(NEAR_LOSS_DB[0], NEAR_LOSS_DB[1]) / 20)
    taps, weights = [], []
    for _ in range(2):
        count = int(rng.integers(5, 9))
        position = np.sort(rng.integers(8, int(0.015 * SAMPLE_RATE), count))
        weights.append(np.concatenate([[1.0], rng.choice([-1.0, 1.0], count) * rng.uniform(0.2, 0.6, count)
                                       * np.exp(-position / (0.004 * SAMPLE_RATE))]))
        taps.append(np.concatenate([[0], position]))
    return Route((near_delay, far_delay), (near_gain, 1.0), (taps[0], taps[1]), (weights[0], weights[1]))


def propagate(signal: np.ndarray, route: Route) -> np.ndarray:
    """(2, n): the signal at the near and far microphones (sparse FIR: a few shifted, weighted copies)."""
    n = signal.shape[-1]
    out = np.zeros((2, n))
    for mic in range(2):
        for tap, weight in zip(route.taps[mic], route.weights[mic]):
            shift = route.delays[mic] + int(tap)
            if shift < n:
                out[mic, shift:] += route.gains[mic] * weight * signal[:n - shift]
    return out


def _band(low: float, high: float) -> np.ndarray:
    """A band-pass on a 1/6-octave grid: the filter designs stay few and cached (designing one costs
    as much as filtering a clip)."""
    snap = lambda f: float(2 ** (np.round(np.log2(f) * 6) / 6))  # noqa: E731
    return bandpass(snap(low), snap(high))


def _envelope(rng: np.random.Generator, n: int) -> np.ndarray:
    """On/off and moving level: the source sounds for one stretch of the clip (or all of it),
    with 20-150 ms ramps, and its level wanders by a few dB at 0.2-1.5 Hz."""
    t = np.arange(0, n + 16, 16) / SAMPLE_RATE  # a 1 ms grid, interpolated: the level moves slowly
    env = 10 ** (rng.uniform(2.0, 5.0) / 20 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t
                                                      + rng.uniform(0, 2 * np.pi)))
    env = np.interp(np.arange(n), np.arange(0, n + 16, 16), env)
    if rng.random() < 0.6:  # on for a stretch only
        length = int(rng.uniform(0.2, 0.8) * n)
        start = int(rng.integers(-length // 2, n - length // 2))
        ramp = max(1, int(rng.uniform(0.02, 0.15) * SAMPLE_RATE))
        gate = np.clip(np.minimum(np.arange(n) - start, start + length - np.arange(n)) / ramp, 0.0, 1.0)
        env = env * (0.5 - 0.5 * np.cos(np.pi * gate))
    return env


def _other_machine(rng: np.random.Generator, n: int, site: Hall) -> np.ndarray:
    f0 = rng.choice(site.machine_f0) * (1.0 + 0.02 * rng.standard_normal())
    k = np.arange(1, int(rng.integers(4, 9)) + 1)
    grid = np.linspace(0.0, 2 * np.pi, 1025)  # one period as a wavetable, as asdx.data.sounds does
    offsets = rng.uniform(0, 2 * np.pi, k.size)
    table = np.sin(np.outer(grid, k) + offsets) @ (k ** -rng.uniform(0.5, 1.5) * (k * f0 < 7000))
    tone = np.interp(np.mod(2 * np.pi * f0 * np.arange(n) / SAMPLE_RATE, 2 * np.pi), grid, table)
    low = rng.uniform(300.0, 1500.0)
    noise = sosfilt(_band(low, low * rng.uniform(2.0, 4.0)), rng.standard_normal(n))
    return tone / rms(tone) + rng.uniform(0.2, 0.6) * noise / rms(noise)


def _impacts(rng: np.random.Generator, n: int) -> np.ndarray:
    count = rng.poisson(rng.uniform(1.0, 4.0) * n / SAMPLE_RATE) + 1
    starts = rng.integers(0, n, count)
    x = sum(resonant_impulses(starts, rng.uniform(0.3, 1.0, count), rng.uniform(f, 2 * f, count),
                               rng.uniform(0.005, 0.03), n) for f in (300.0, 1200.0))
    return x / rms(x) if np.any(x) else x


def _fan(rng: np.random.Generator, n: int, site: Hall) -> np.ndarray:
    """Broadband airflow, amplitude-modulated at the blade rate, plus the blade-pass tone."""
    t = np.arange(n) / SAMPLE_RATE
    blade = site.fan_hz * (1.0 + 0.01 * rng.standard_normal())
    air = sosfilt(_band(100.0, rng.uniform(2000.0, 5000.0)), rng.standard_normal(n))
    air = air * (1.0 + 0.3 * np.sin(2 * np.pi * blade * t))
    tone = np.sin(2 * np.pi * blade * t) + 0.4 * np.sin(4 * np.pi * blade * t + 1.0)
    return air / rms(air) + rng.uniform(0.3, 0.8) * tone / rms(tone)


def _voice(rng: np.random.Generator, n: int) -> np.ndarray:
    """Voice-like bands: a buzz at a wandering pitch, through three formant bands that change per
    syllable (about 4 per second), gated by a syllable envelope."""
    t = np.arange(n) / SAMPLE_RATE
    pitch = rng.uniform(90.0, 240.0) * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
    phase = np.mod(np.cumsum(pitch) / SAMPLE_RATE, 1.0)
    buzz = 2.0 * phase - 1.0 + 0.3 * rng.standard_normal(n)  # sawtooth plus breath
    speaker = rng.uniform(0.9, 1.15)
    out = np.zeros(n)
    start = 0
    while start < n:
        length = int(rng.uniform(0.12, 0.35) * SAMPLE_RATE)
        stop = min(n, start + length)
        formants = np.asarray(_VOWELS[rng.integers(len(_VOWELS))]) * speaker
        segment = sum(g * sosfilt(_band(f / 1.12, f * 1.12), buzz[start:stop])
                      for f, g in zip(formants, (1.0, 0.6, 0.3)))
        gate = np.sin(np.pi * np.arange(stop - start) / length) ** 2 if rng.random() < 0.85 else 0.0
        out[start:stop] = segment * gate
        start = stop
    return out / rms(out) if np.any(out) else out


def source_signal(kind: str, rng: np.random.Generator, n: int, site: Hall) -> np.ndarray:
    """One interferer at its source (before its envelope and route): unit RMS, or less where its
    peak would pass CREST (sparse impacts), so that the hall rarely clips the 16-bit clip."""
    makers = {"machine": lambda: _other_machine(rng, n, site), "impacts": lambda: _impacts(rng, n),
              "fan": lambda: _fan(rng, n, site), "voice": lambda: _voice(rng, n)}
    if kind not in makers:
        raise ValueError(f"interferer kind: {kind!r} is not one of {INTERFERER_KINDS}.")
    x = makers[kind]()
    return x / max(rms(x), float(np.max(np.abs(x))) / CREST)


@dataclass(frozen=True)
class Interferer:
    """One rendered interferer: what it is, how it travelled and what each microphone got (2, n)."""

    kind: str
    route: Route
    audio: np.ndarray


def interferers(machine: str, domain: str, n: int, seed: int, rng: np.random.Generator) -> list[Interferer]:
    """The interferers of one clip of `machine` in `domain`, drawn from the clip's Generator.

    Their summed level at the far microphone is about the hall's level (relative to the machine's
    unit RMS at the near microphone), each interferer within +-4 dB of an equal share.
    """
    site = hall(machine, domain, seed)
    count = 1 + int(rng.poisson(site.count - 1.0))
    share = site.level / np.sqrt(count)
    out = []
    for _ in range(count):
        kind = INTERFERER_KINDS[int(rng.choice(len(INTERFERER_KINDS), p=site.mix))]
        signal = source_signal(kind, rng, n, site) * _envelope(rng, n)
        route = random_route(rng)
        out.append(Interferer(kind, route, share * 10 ** (rng.uniform(-4.0, 4.0) / 20) * propagate(signal, route)))
    return out
