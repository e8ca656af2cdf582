"""Generic synthetic sound classes for collections other than UrbanSound8K: any number of classes
(tfdata.classes.MIN_CLASSES to MAX_CLASSES), each distinguishable on a log-mel spectrogram.

Class k belongs to family `FAMILIES[k % 8]` (bell, hum, chirp, click, rain, buzz, warble, knock: a
timbre and a time pattern each) and sits at its own point of that family's (pitch, rate) plane: the
j-th class of a family (j = k // 8) at the j-th point of the R2 low-discrepancy sequence, so the
first classes of a family are far apart and class k sounds the same whatever the number of classes.
A recording (`Voice`) jitters the class's point by up to `JITTER / sqrt(classes in the family)` of
each range (narrower as classes crowd the plane); every clip then draws its own details (onsets,
harmonics, noise) and tfdata.synth.mix_scene adds the background at a random SNR. Default names are
the family names, then `class_009`, `class_010`… The building blocks are tfdata.synth's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfdata.classes import MAX_CLASSES, MIN_CLASSES, ClassListError
from tfdata.synth import (
    SynthConfig,
    _Canvas,
    _decay,
    _gates,
    _harmonics,
    _noise,
    _place,
    _rms,
    _runs,
    _tone,
    mix_scene,
)

JITTER = 0.1  # a recording's offset from its class's point, at most this fraction of each range (one class)
_PLASTIC = 1.324717957244746  # the R2 sequence's constant: x_j = frac(0.5 + j / g), y_j = frac(0.5 + j / g²)


def _onsets(rng, seconds: float, rate_hz: float, regularity: float) -> np.ndarray:
    """Event times at `rate_hz` on average from a random start inside the first period; `regularity`
    1 gives a metronome, 0 a Poisson process. At least one event inside the clip."""
    period = 1.0 / rate_hz
    count = int(seconds * rate_hz) + 2
    gaps = period * (regularity + (1.0 - regularity) * rng.exponential(1.0, count))
    times = rng.uniform(0, min(period, 0.5 * seconds)) + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    return times[times < seconds]


def _bell(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """Struck bell: inharmonic partials decaying at their own speed, struck about `rate_hz` times a second."""
    m = min(c.n, int(rng.uniform(1.5, 3.0) * c.rate))
    u = np.arange(m) / c.rate
    ring = rng.uniform(0.5, 1.5)
    template = np.zeros(m)
    for ratio, amp in ((1.0, 1.0), (2.0, 0.5), (2.76, 0.6), (4.07, 0.3), (5.4, 0.25)):
        if ratio * pitch < c.partial_limit:
            template += amp * np.sin(2 * np.pi * ratio * pitch * u + rng.uniform(0, 6.3)) * _decay(
                m, c.rate, ring / ratio ** 0.7, attack=0.001)
    times = _onsets(rng, c.seconds, rate_hz, rng.uniform(0.3, 0.9))
    return _place(c.n, c.rate, times, rng.uniform(0.6, 1.0, times.size), template)


def _hum(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """Steady low harmonic tone and a detuned twin that beats against it `rate_hz` times a second."""
    amps = [k ** -rng.uniform(0.5, 1.5) for k in range(1, 11)]
    tone = _tone(pitch, c.n, c.rate, amps, c.partial_limit, rng.uniform(0, 6.3))
    twin = _tone(pitch + rate_hz, c.n, c.rate, amps, c.partial_limit, rng.uniform(0, 6.3))
    return tone + rng.uniform(0.3, 0.8) * twin


def _chirp(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """Upward sweeps of up to an octave from `pitch`, `rate_hz` a second, in phrases."""
    t = c.time()
    cycle = np.mod(rate_hz * t + rng.uniform(0, 1), 1.0)
    duty = rng.uniform(0.3, 0.7)
    inside = np.minimum(cycle / duty, 1.0)
    track = pitch * 2.0 ** (rng.uniform(0.4, 1.0) * inside)
    tone = _harmonics(track, c.rate, [1.0, rng.uniform(0.1, 0.4)], c.partial_limit)
    env = np.where(cycle < duty, np.sin(np.pi * inside) ** 2, 0.0)
    phrases = _runs(rng, c.seconds, (1, 4), (0.6, 2.5), (0.1, 0.5), (0.0, 0.3 * c.seconds))
    return tone * env * _gates(c.n, c.rate, phrases, 0.01, 0.05)


def _click(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """Short noise clicks in a band around `pitch`, `rate_hz` a second, nearly regular."""
    m = int(0.03 * c.rate)
    band = _noise(rng, m, c.rate, highpass=pitch / 4, peaks=[(pitch, 0.3, 30.0)])
    template = band * _decay(m, c.rate, rng.uniform(0.002, 0.006), attack=0.0003)
    times = _onsets(rng, c.seconds, rate_hz, rng.uniform(0.8, 0.98))
    return _place(c.n, c.rate, times, rng.uniform(0.7, 1.0, times.size), template)


def _rain(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """A hiss band around `pitch` with random drops (short tonal plinks above it), `rate_hz` a second."""
    bed = _noise(rng, c.n, c.rate, slope=rng.uniform(0, 1), lowpass=min(pitch * 3, c.partial_limit),
                 highpass=pitch / 3, peaks=[(pitch, rng.uniform(0.4, 0.8), 15.0)])
    m = int(0.04 * c.rate)
    drop_hz = min(pitch * rng.uniform(1.2, 2.0), c.partial_limit)
    template = np.sin(2 * np.pi * drop_hz * np.arange(m) / c.rate) * _decay(m, c.rate, rng.uniform(0.005, 0.015))
    times = _onsets(rng, c.seconds, rate_hz, 0.0)
    drops = _place(c.n, c.rate, times, rng.uniform(0.3, 1.0, times.size), template)
    return bed * rng.uniform(0.4, 1.0) + drops / _rms(drops)


def _buzz(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """A bright harmonic-rich tone at `pitch` switched on and off `rate_hz` times a second."""
    tone = _tone(pitch, c.n, c.rate, [1.0 / k for k in range(1, 31)], c.partial_limit, rng.uniform(0, 6.3))
    on = np.sin(2 * np.pi * rate_hz * c.time() + rng.uniform(0, 6.3)) + rng.uniform(-0.3, 0.3)
    return tone / (1.0 + np.exp(-12.0 * on))


def _warble(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """A pure-ish tone at `pitch` with a deep vibrato of `rate_hz`, in notes with short rests."""
    t = c.time()
    depth = rng.uniform(1.0, 3.0) / 12.0  # octaves
    track = pitch * 2.0 ** (depth * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 6.3)))
    tone = _harmonics(track, c.rate, [1.0, rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.2)], c.partial_limit)
    notes = _runs(rng, c.seconds, (1, 6), (0.3, 1.5), (0.05, 0.4), (0.0, 0.2 * c.seconds))
    return tone * _gates(c.n, c.rate, notes, 0.02, 0.05)


def _knock(rng, c: _Canvas, pitch: float, rate_hz: float) -> np.ndarray:
    """Low resonant thumps at `pitch` Hz with a short noise attack, `rate_hz` a second, in groups."""
    m = int(0.3 * c.rate)
    u = np.arange(m) / c.rate
    template = np.sin(2 * np.pi * pitch * u) * _decay(m, c.rate, rng.uniform(0.02, 0.06), attack=0.001)
    template += 0.4 * _noise(rng, m, c.rate, lowpass=min(4 * pitch + 500, c.partial_limit)) * _decay(
        m, c.rate, 0.004, attack=0.0005)
    times = _onsets(rng, c.seconds, rate_hz, rng.uniform(0.6, 0.95))
    keep = rng.random(times.size) < 0.8
    keep[0] = True
    return _place(c.n, c.rate, times[keep], rng.uniform(0.6, 1.0, int(keep.sum())), template)


@dataclass(frozen=True)
class Family:
    """A kind of sound: its synthesiser(rng, canvas, pitch_hz, rate_hz) and the ranges its classes span."""

    name: str
    pitch_hz: tuple[float, float]  # the characteristic frequency (fundamental, band centre, resonance)
    rate_hz: tuple[float, float]  # the characteristic repetition or modulation rate
    synthesise: Callable[[np.random.Generator, _Canvas, float, float], np.ndarray]


FAMILIES = (
    Family("bell", (300.0, 2500.0), (0.4, 3.0), _bell),
    Family("hum", (60.0, 500.0), (0.3, 3.0), _hum),
    Family("chirp", (800.0, 3000.0), (2.0, 12.0), _chirp),
    Family("click", (600.0, 6000.0), (3.0, 25.0), _click),
    Family("rain", (400.0, 5000.0), (5.0, 40.0), _rain),
    Family("buzz", (80.0, 600.0), (3.0, 12.0), _buzz),
    Family("warble", (300.0, 3000.0), (3.0, 10.0), _warble),
    Family("knock", (50.0, 300.0), (1.0, 6.0), _knock),
)


def default_class_names(count: int) -> tuple[str, ...]:
    """The first `count` generic class names: the family names, then class_009, class_010…"""
    if not MIN_CLASSES <= int(count) <= MAX_CLASSES:
        raise ClassListError(f"{count} class(es): a class list has {MIN_CLASSES} to {MAX_CLASSES}")
    return tuple(FAMILIES[k].name if k < len(FAMILIES) else f"class_{k + 1:03d}" for k in range(int(count)))


@dataclass(frozen=True)
class Voice:
    """One recording's sound: its class's family at a jittered (pitch, rate)."""

    class_index: int
    pitch_hz: float
    rate_hz: float

    @property
    def family(self) -> Family:
        return FAMILIES[self.class_index % len(FAMILIES)]


def class_point(class_index: int) -> tuple[float, float]:
    """Class k's place in its family's (pitch, rate) plane, each in [0, 1) of the range (log scale)."""
    j = int(class_index) // len(FAMILIES)
    return math.fmod(0.5 + j / _PLASTIC, 1.0), math.fmod(0.5 + j / _PLASTIC ** 2, 1.0)


def draw_voice(class_index: int, num_classes: int, rng: np.random.Generator) -> Voice:
    """A recording of class `class_index` among `num_classes`: the class's point jittered (rng)."""
    if not 0 <= int(class_index) < int(num_classes):
        raise ValueError(f"class index must be in 0..{num_classes - 1}, got {class_index}")
    family = FAMILIES[class_index % len(FAMILIES)]
    siblings = len(range(class_index % len(FAMILIES), int(num_classes), len(FAMILIES)))
    spread = JITTER / math.sqrt(siblings)
    u_pitch, u_rate = (min(max(u + rng.uniform(-spread, spread), 0.0), 1.0) for u in class_point(class_index))
    (p_lo, p_hi), (r_lo, r_hi) = family.pitch_hz, family.rate_hz
    return Voice(int(class_index), p_lo * (p_hi / p_lo) ** u_pitch, r_lo * (r_hi / r_lo) ** u_rate)


def synthesize_voice(voice: Voice, rng: np.random.Generator, rate: int, seconds: float,
                     config: SynthConfig) -> np.ndarray:
    """The voice's clean sound at `rate` Hz, round(seconds·rate) samples, peak 1."""
    n = int(round(seconds * rate))
    if n < 1:
        raise ValueError(f"a clip needs at least one sample ({seconds} s at {rate} Hz)")
    canvas = _Canvas(n, int(rate), config.partial_ceiling * rate)
    signal = voice.family.synthesise(rng, canvas, voice.pitch_hz, voice.rate_hz)
    peak = float(np.max(np.abs(signal)))
    if not peak > 0.0:  # every family puts an event inside the clip: this is a bug
        raise RuntimeError(f"{voice} synthesised silence or NaN ({seconds} s at {rate} Hz)")
    return signal / peak


def render_voice_clip(voice: Voice, rng: np.random.Generator, sample_rate: int, seconds: float, channels: int,
                      config: SynthConfig) -> np.ndarray:
    """A file's frames: the voice synthesised at min(sample_rate, config.source_rate), then
    tfdata.synth.mix_scene (background at a random SNR, channels, peak). (frames, channels) float32."""
    rate = min(int(sample_rate), config.source_rate)
    main = synthesize_voice(voice, rng, rate, seconds, config)
    return mix_scene(main, rng, rate, int(sample_rate), seconds, channels, 1, config)
