"""`us8k synth OUT`: a synthetic dataset in UrbanSound8K's exact layout.

Ten procedurally generated sound classes (in `URBANSOUND8K_CLASSES` order) with parameters randomised per
clip, mixed with coloured background noise (and, as difficulty rises, a quieter second class) at a
random SNR, written as `OUT/audio/fold1..fold10/{fsID}-{classID}-{occurrence}-{slice}.wav` in the
real data's mix of formats (8-bit unsigned, 16/24-bit, 32-bit float; mono and stereo; 8–96 kHz;
0.3–4 s) and listed in `OUT/metadata/UrbanSound8K.csv` with the real columns. Every clip draws from
its own `numpy.random.Generator` seeded by (seed, fold, class, n): the same seed gives byte-identical
files and CSV whatever the order of generation. `--corrupt N` adds N listed but unreadable files.
The signal building blocks and `mix_scene`, `prepare_out_dir`, `corrupt_bytes` and `write_csv` also
serve the other layouts' generic classes (tfdata.synth_sounds, tfdata.synth_layouts). The command line
is cli/synth.py.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soxr

from tfdata.audio import RESAMPLE_QUALITY
from tfdata.contract import (
    AUDIO_DIR,
    CLIP_SECONDS,
    CSV_COLUMNS,
    METADATA_CSV,
    SAMPLE_RATE,
    URBANSOUND8K_CLASSES,
    URBANSOUND8K_FOLDS,
    fold_dir_name,
)
from tfdata.synth_encoding import wav_bytes

_NUM_CLASSES = len(URBANSOUND8K_CLASSES)  # the ten of UrbanSound8K's layout, in classID order
DIFFICULTY_LEVELS = {"easy": 0.0, "medium": 0.5, "hard": 1.0}
DEFAULT_DIFFICULTY = "medium"
DEFAULT_CLIPS_PER_CLASS_PER_FOLD = 4
CORRUPT_KINDS = ("empty", "truncated", "text")  # zero bytes; WAV header intact, data cut; not audio


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the generated data. `difficulty` (0 easy … 1 hard) interpolates
    each `*_easy` / `*_hard` pair; the rest are the real data's format and length statistics."""

    difficulty: float = DIFFICULTY_LEVELS[DEFAULT_DIFFICULTY]
    # Background noise: SNR in dB (class RMS over noise RMS), drawn uniformly from the range.
    snr_db_easy: tuple[float, float] = (12.0, 27.0)
    snr_db_hard: tuple[float, float] = (-10.0, 4.0)
    # "Bleed": another class mixed in, level in dB relative to the clip's own class.
    bleed_probability_easy: float = 0.2
    bleed_probability_hard: float = 1.0
    bleed_db_easy: tuple[float, float] = (-25.0, -15.0)
    bleed_db_hard: tuple[float, float] = (-8.0, 0.0)
    # Salience 2 (background source, as in the real CSV): this much lower SNR.
    background_salience_probability: float = 0.3
    background_salience_snr_penalty_db: float = 6.0
    background_slope: tuple[float, float] = (0.0, 2.0)  # noise power ∝ f^-slope: 0 white, 1 pink, 2 brown
    # Formats, drawn once per source recording (fsID), weighted toward 44.1/48 kHz as in the real set.
    sample_rates: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
    sample_rate_weights: tuple[float, ...] = (0.02, 0.02, 0.02, 0.03, 0.02, 0.02, 0.55, 0.25, 0.07)
    subtypes: tuple[str, ...] = ("PCM_U8", "PCM_16", "PCM_24", "FLOAT")
    subtype_weights: tuple[float, ...] = (0.06, 0.58, 0.30, 0.06)
    stereo_probability: float = 0.85
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)
    # Lengths: most clips are full 4 s slices; some are shorter, more so for the short-event classes.
    full_seconds: float = float(CLIP_SECONDS)
    min_seconds: float = 0.3
    short_clip_probability: tuple[float, ...] = (0.05, 0.35, 0.05, 0.3, 0.1, 0.05, 0.5, 0.1, 0.05, 0.05)
    slices_per_recording: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)  # P(an fsID has 1, 2, 3, 4 slices)
    # --imbalance: clips per class relative to the rest (UrbanSound8K: 429 car_horn, 374 gun_shot, 929 siren of 1000).
    imbalance_ratios: tuple[float, ...] = (1.0, 0.429, 1.0, 1.0, 1.0, 1.0, 0.374, 1.0, 0.929, 1.0)
    # Class sources are synthesised at min(file rate, source_rate) and resampled up with soxr (the
    # model hears SAMPLE_RATE; this halves the work for 44.1/48 kHz files); the background noise is
    # generated at the file's own rate, so the band above source_rate / 2 is not empty.
    source_rate: int = SAMPLE_RATE
    partial_ceiling: float = 0.45  # harmonics above this fraction of the sample rate are dropped (no aliasing)

    def interpolate(self, easy, hard):
        """The value between the easy and hard setting at this difficulty (numbers or pairs)."""
        d = self.difficulty
        if isinstance(easy, tuple):
            return tuple((1 - d) * a + d * b for a, b in zip(easy, hard))
        return (1 - d) * easy + d * hard


# ---------------------------------------------------------------------------------------------
# Signal building blocks (vectorised numpy; n samples at `rate` Hz).


@dataclass(frozen=True)
class _Canvas:
    n: int  # samples
    rate: int  # Hz
    partial_limit: float  # Hz: highest partial synthesised

    @property
    def seconds(self) -> float:
        return self.n / self.rate

    def time(self) -> np.ndarray:
        return np.arange(self.n) / self.rate


def _fast_len(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (FFT-friendly)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) + 1e-12


def _db(value_db: float) -> float:
    return 10.0 ** (value_db / 20.0)


def _noise(rng, n, rate, slope=0.0, lowpass=None, highpass=None, peaks=()) -> np.ndarray:
    """Unit-RMS noise shaped in the frequency domain: power ∝ f^-slope, 2nd-order low/high-pass
    corners, and log-Gaussian resonances `(centre_hz, width_octaves, boost)`. float32."""
    size = _fast_len(n)
    bins = size // 2 + 1
    f = np.maximum(np.arange(bins, dtype=np.float32) * np.float32(rate / size), np.float32(20.0))  # (bins,)
    log2_f = np.log2(f)
    gain = np.exp2(np.float32(-slope / 2.0) * log2_f)
    if lowpass:
        gain /= np.sqrt(1.0 + (f / np.float32(lowpass)) ** 4)
    if highpass:
        gain /= np.sqrt(1.0 + (np.float32(highpass) / f) ** 4)
    for centre, width, boost in peaks:
        octaves = log2_f - np.float32(np.log2(centre))
        gain *= 1.0 + np.float32(boost) * np.exp(np.float32(-0.5 / width**2) * octaves**2)
    gain[0] = 0.0
    spectrum = np.empty(bins, dtype=np.complex64)
    spectrum.real = rng.standard_normal(bins, dtype=np.float32)
    spectrum.imag = rng.standard_normal(bins, dtype=np.float32)
    spectrum *= gain
    out = np.fft.irfft(spectrum, size)[:n]
    return out / np.float32(_rms(out))


def _harmonics(f0, rate, amps, limit, phase0=0.0) -> np.ndarray:
    """Σ_k amps[k-1]·sin(k·θ(t)) for a per-sample f0 track (θ' = 2π f0); partials above `limit` Hz
    are muted sample by sample. Powers of e^{iθ} by recurrence: no sin() per partial."""
    f0 = np.asarray(f0, dtype=np.float64)  # (n,)
    theta = np.mod((2 * np.pi / rate) * np.cumsum(f0) + phase0, 2 * np.pi).astype(np.float32)  # (n,)
    z = np.empty(f0.shape[0], dtype=np.complex64)  # e^{iθ}
    z.real, z.imag = np.cos(theta), np.sin(theta)
    zk = z.copy()  # e^{ikθ}
    out = np.zeros(f0.shape[0], dtype=np.float32)
    f_min, f_max = float(f0.min()), float(f0.max())
    for k, amp in enumerate(amps, start=1):
        if k * f_min >= limit:
            break
        if amp:
            part = amp * zk.imag
            if k * f_max >= limit:
                part *= k * f0 < limit
            out += part
        zk *= z
    return out


def _tone(freq, n, rate, amps, limit, phase0=0.0) -> np.ndarray:
    """Harmonic tone at a constant frequency."""
    return _harmonics(np.full(n, float(freq)), rate, amps, limit, phase0)


def _gates(n, rate, segments, attack, release) -> np.ndarray:
    """Envelope that is 1 inside each (start_s, duration_s) segment with linear attack/release ramps."""
    t = np.arange(n) / rate
    env = np.zeros(n)
    for start, duration in segments:
        lo, hi = np.searchsorted(t, [start, start + duration + release])
        if lo >= n:
            continue
        tt = t[lo:hi]
        up = np.clip((tt - start) / attack, 0.0, 1.0)
        down = np.clip((start + duration + release - tt) / release, 0.0, 1.0)
        env[lo:hi] = np.maximum(env[lo:hi], np.minimum(up, down))
    return env


def _runs(rng, total_s, count_range, length_s, gap_s, first_s) -> list[tuple[float, float]]:
    """Random on-segments (start_s, duration_s): the first starts within `first_s`, none after `total_s`."""
    segments = []
    start = rng.uniform(*first_s)
    for _ in range(rng.integers(count_range[0], count_range[1] + 1)):
        if start >= total_s:
            break
        duration = rng.uniform(*length_s)
        segments.append((start, duration))
        start += duration + rng.uniform(*gap_s)
    return segments


def _place(n, rate, times_s, gains, template) -> np.ndarray:
    """Copies of `template` starting at `times_s` with `gains` (an impulse train convolved via FFT);
    an event up to one template length before 0 still rings into the clip."""
    lead = template.size
    impulses = np.zeros(lead + n)
    idx = np.round(np.asarray(times_s) * rate).astype(np.int64) + lead
    keep = (idx >= 0) & (idx < lead + n)
    np.add.at(impulses, idx[keep], np.asarray(gains, dtype=np.float64)[keep])
    size = _fast_len(lead + n + template.size)
    out = np.fft.irfft(np.fft.rfft(impulses, size) * np.fft.rfft(template, size), size)
    return out[lead:lead + n]


def _decay(m, rate, tau, attack=0.0005) -> np.ndarray:
    t = np.arange(m) / rate
    return np.exp(-t / tau) * np.clip(t / attack, 0.0, 1.0)


def _add_segment(out, start, seg):
    lo = int(start)
    if lo >= out.size or seg.size == 0:
        return
    m = min(seg.size, out.size - lo)
    out[lo:lo + m] += seg[:m]


def _loguniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# ---------------------------------------------------------------------------------------------
# The ten classes. Each draws its parameters from rng and returns c.n samples (any scale).


def _air_conditioner(rng, c: _Canvas) -> np.ndarray:
    """Broadband filtered noise (fan), a fan resonance, a low mains-like hum, slow beating."""
    noise = _noise(rng, c.n, c.rate, slope=rng.uniform(0.3, 1.5), lowpass=_loguniform(rng, 400, 4000),
                   peaks=[(_loguniform(rng, 150, 1500), rng.uniform(0.3, 1.0), rng.uniform(1, 6))])
    f0 = rng.uniform(45, 130)
    hum = _tone(f0, c.n, c.rate, [1.0, rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.5), rng.uniform(0, 0.3)],
                c.partial_limit, rng.uniform(0, 2 * np.pi))
    hum *= _db(rng.uniform(-18, -4)) / _rms(hum)
    t = c.time()
    beat = 1.0 + rng.uniform(0.02, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t + rng.uniform(0, 6.3))
    return (noise + hum) * beat


def _car_horn(rng, c: _Canvas) -> np.ndarray:
    """One to three steady honks of a few harmonics, often a two-tone horn, a little rasp."""
    f0 = rng.uniform(330, 520)
    rolloff = rng.uniform(0.6, 1.4)
    amps = [k ** -rolloff for k in range(1, 9)]
    t = c.time()
    wobble = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    tone = _harmonics(f0 * wobble, c.rate, amps, c.partial_limit)
    if rng.random() < 0.6:
        tone += rng.uniform(0.5, 1.0) * _harmonics(f0 * rng.uniform(1.18, 1.33) * wobble, c.rate, amps,
                                                   c.partial_limit)
    honks = _runs(rng, c.seconds, (1, 3), (0.25, 2.5), (0.08, 0.6), (0.0, 0.4 * c.seconds))
    env = _gates(c.n, c.rate, honks, rng.uniform(0.01, 0.03), rng.uniform(0.03, 0.08))
    rasp = _noise(rng, c.n, c.rate, highpass=1000.0) * rng.uniform(0.02, 0.1)
    return (tone / _rms(tone) + rasp) * env


def _children_playing(rng, c: _Canvas) -> np.ndarray:
    """Several voices of short syllables with fast random pitch glides through formant-shaped harmonics."""
    out = np.zeros(c.n)
    for _ in range(rng.integers(2, 5)):
        base = rng.uniform(230, 420)
        gain = rng.uniform(0.3, 1.0)
        start = rng.uniform(0, 0.5) * c.seconds
        while start < c.seconds:
            duration = rng.uniform(0.08, 0.45)
            m = int(duration * c.rate)
            u = np.linspace(0.0, 1.0, m)
            semitones = (rng.uniform(-8, 10) * u ** rng.uniform(0.5, 2.0)
                         + rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(4, 8) * duration * u))
            f0 = base * 2.0 ** (semitones / 12.0)
            f_mean = float(f0.mean())
            f1, f2 = rng.uniform(500, 1100), rng.uniform(1300, 3000)
            amps = [np.exp(-0.5 * ((k * f_mean - f1) / 200) ** 2) + 0.7 * np.exp(-0.5 * ((k * f_mean - f2) / 300) ** 2)
                    + 0.05 / k for k in range(1, 13)]
            seg = _harmonics(f0, c.rate, amps, c.partial_limit) * np.sin(np.pi * u) ** rng.uniform(0.3, 1.0)
            _add_segment(out, start * c.rate, gain * seg / _rms(seg))
            start += duration + rng.uniform(0.03, 0.5)
    return out


def _dog_bark(rng, c: _Canvas) -> np.ndarray:
    """Short noisy harmonic bursts: pitch jumps up then falls, sharp attack, fast decay."""
    out = np.zeros(c.n)
    start = rng.uniform(0, 0.4) * c.seconds
    formant = rng.uniform(800, 2000)
    f_start = rng.uniform(400, 1000)
    for _ in range(rng.integers(1, 6)):
        if start >= c.seconds:
            break
        duration = rng.uniform(0.08, 0.3)
        m = int(duration * c.rate)
        u = np.linspace(0.0, 1.0, m)
        contour = rng.uniform(1, 4) * np.sin(np.pi * np.minimum(u / 0.4, 1.0)) - rng.uniform(2, 10) * u
        f0 = f_start * rng.uniform(0.9, 1.1) * 2.0 ** (contour / 12.0)
        amps = [np.exp(-0.5 * np.log2(k * f_start / formant) ** 2) + 0.1 / k for k in range(1, 11)]
        voiced = _harmonics(f0, c.rate, amps, c.partial_limit)
        breath = _noise(rng, m, c.rate, peaks=[(formant, 1.0, 4.0)])
        seg = voiced / _rms(voiced) + rng.uniform(0.3, 1.0) * breath
        growl = 1.0 + rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.uniform(30, 80) * u * duration)
        seg *= growl * _decay(m, c.rate, duration / rng.uniform(2, 4), attack=rng.uniform(0.005, 0.015))
        _add_segment(out, start * c.rate, rng.uniform(0.6, 1.0) * seg)
        start += duration + rng.uniform(0.12, 0.9)
    return out


def _drilling(rng, c: _Canvas) -> np.ndarray:
    """High steady whine with harmonics, FM wobble and chatter AM, spinning up at each run, plus grit."""
    t = c.time()
    if rng.random() < 0.5:
        runs = [(0.0, c.seconds)]
    else:
        runs = _runs(rng, c.seconds, (1, 3), (0.5, 3.0), (0.1, 0.6), (0.0, 0.3 * c.seconds))
    spin = _gates(c.n, c.rate, runs, rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2))
    f0 = _loguniform(rng, 600, 3000)
    fm = 1.0 + rng.uniform(0.001, 0.01) * np.sin(2 * np.pi * rng.uniform(5, 30) * t)
    track = f0 * fm * (0.5 + 0.5 * spin)
    tone = _harmonics(track, c.rate, [k ** -rng.uniform(0.3, 1.2) for k in range(1, 7)], c.partial_limit)
    chatter = 1.0 + rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * rng.uniform(15, 60) * t)
    grit = _noise(rng, c.n, c.rate, highpass=rng.uniform(1000, 3000)) * _db(rng.uniform(-14, -4))
    return (tone / _rms(tone) * chatter + grit) * spin


def _engine_idling(rng, c: _Canvas) -> np.ndarray:
    """Low rumble: resonant pulses at the firing rate (with drift, jitter, cylinder pattern) and brown noise."""
    rate_hz = rng.uniform(15, 45)
    jitter = rng.uniform(0.02, 0.06)
    drift = rng.uniform(0.1, 0.5)
    count = int(c.seconds * rate_hz * 1.1) + 2
    periods = (1.0 / rate_hz) * (1.0 + jitter * rng.standard_normal(count))
    times = np.cumsum(periods) - rng.uniform(0, 1.0 / rate_hz)
    times *= 1.0 + 0.03 * np.sin(2 * np.pi * drift * times)
    cylinders = rng.uniform(0.6, 1.0, rng.integers(4, 9))
    gains = cylinders[np.arange(count) % cylinders.size]
    m = int(0.12 * c.rate)
    resonance_hz, ring_s = rng.uniform(50, 250), rng.uniform(0.008, 0.03)
    pulse = np.sin(2 * np.pi * resonance_hz * np.arange(m) / c.rate) * _decay(m, c.rate, ring_s, attack=0.003)
    pulse += 0.3 * _noise(rng, m, c.rate, lowpass=800.0) * _decay(m, c.rate, 0.01, attack=0.003)
    rumble = _place(c.n, c.rate, times, gains, pulse)
    rumble /= _rms(rumble)
    brown = _noise(rng, c.n, c.rate, slope=2.0, lowpass=rng.uniform(200, 800)) * _db(rng.uniform(-12, -3))
    return rumble + brown


def _gun_shot(rng, c: _Canvas) -> np.ndarray:
    """Impulses: a broadband crack with exponential decay, a low thump and a reverberant tail."""
    pattern = rng.choice(3, p=[0.45, 0.35, 0.2])  # single, a few, a burst
    first = rng.uniform(0.02, 0.5 if c.seconds < 2 else 0.6) * c.seconds
    if pattern == 0:
        times = [first]
    elif pattern == 1:
        times = first + np.concatenate([[0.0], np.cumsum(rng.uniform(0.15, 1.2, rng.integers(1, 3)))])
    else:
        times = first + np.concatenate([[0.0], np.cumsum(rng.uniform(0.06, 0.14, rng.integers(2, 8)))])
    m = min(c.n, int(rng.uniform(0.3, 1.2) * c.rate))
    crack = _noise(rng, m, c.rate, slope=rng.uniform(0, 1), lowpass=rng.uniform(2000, 8000)) * _decay(
        m, c.rate, rng.uniform(0.01, 0.06))
    tail = _noise(rng, m, c.rate, slope=1.0, lowpass=rng.uniform(800, 3000)) * _decay(
        m, c.rate, rng.uniform(0.15, 0.6), attack=0.01) * rng.uniform(0.05, 0.3)
    thump = np.sin(2 * np.pi * rng.uniform(50, 150) * np.arange(m) / c.rate) * _decay(
        m, c.rate, rng.uniform(0.02, 0.08)) * rng.uniform(0.3, 1.0)
    template = crack + tail + thump
    return _place(c.n, c.rate, times, rng.uniform(0.6, 1.0, len(times)), template)


def _jackhammer(rng, c: _Canvas) -> np.ndarray:
    """Fast periodic metallic hits in on/off runs over a compressor rumble."""
    rate_hz = rng.uniform(10, 30)
    runs = _runs(rng, c.seconds, (1, 3), (0.6, 3.5), (0.1, 0.8), (0.0, 0.3 * c.seconds))
    times = []
    for start, duration in runs:
        k = max(1, int(duration * rate_hz))
        times.append(start + np.arange(k) / rate_hz * (1.0 + rng.uniform(-0.02, 0.02, k)))
    times = np.concatenate(times)
    m = int(0.06 * c.rate)
    u = np.arange(m) / c.rate
    ring = sum(np.sin(2 * np.pi * _loguniform(rng, 800, 4000) * u) * rng.uniform(0.3, 1.0)
               for _ in range(rng.integers(2, 4)))
    template = ring * _decay(m, c.rate, rng.uniform(0.004, 0.02))
    template += _noise(rng, m, c.rate, highpass=500.0) * _decay(m, c.rate, rng.uniform(0.001, 0.005)) * 2.0
    template += np.sin(2 * np.pi * rng.uniform(80, 200) * u) * _decay(m, c.rate, 0.01) * rng.uniform(0.3, 1.0)
    hits = _place(c.n, c.rate, times, rng.uniform(0.7, 1.0, times.size), template)
    hits /= _rms(hits)
    compressor = _noise(rng, c.n, c.rate, slope=2.0, lowpass=600.0) * _db(rng.uniform(-20, -8))
    return hits + compressor


def _siren(rng, c: _Canvas) -> np.ndarray:
    """Pitch sweeps: slow wail, fast yelp or two-tone hi-lo, with a Doppler-like pass."""
    t = c.time()
    f_lo = rng.uniform(450, 900)
    f_hi = f_lo * rng.uniform(1.5, 2.4)
    kind = rng.choice(3, p=[0.5, 0.3, 0.2])
    phase = rng.uniform(0, 1)
    if kind == 0:  # wail
        shape = (0.5 - 0.5 * np.cos(2 * np.pi * (rng.uniform(0.08, 0.35) * t + phase))) ** rng.uniform(0.6, 1.5)
    elif kind == 1:  # yelp: rising sawtooth sweeps
        shape = np.mod(rng.uniform(2.5, 7.0) * t + phase, 1.0) ** rng.uniform(0.5, 1.0)
    else:  # hi-lo
        shape = 0.5 + 0.5 * np.tanh(8.0 * np.sin(2 * np.pi * (t / rng.uniform(0.8, 1.4) + phase)))
    centre = rng.uniform(0, c.seconds)
    doppler = 1.0 + rng.uniform(-0.03, 0.03) * np.tanh((t - centre) / rng.uniform(0.5, 2.0))
    track = f_lo * (f_hi / f_lo) ** shape * doppler
    amps = np.array([k ** -rng.uniform(0.7, 2.0) for k in range(1, 7)])
    if rng.random() < 0.5:  # electronic: odd harmonics dominate
        amps[1::2] *= 0.3
    tone = _harmonics(track, c.rate, amps, c.partial_limit)
    swell = _db(-rng.uniform(0, 12) * ((t - centre) / max(c.seconds, 1.0)) ** 2)
    return tone * swell


def _street_music(rng, c: _Canvas) -> np.ndarray:
    """Chords over a rhythm: a diatonic progression, plucked or sustained notes, bass, maybe drums."""
    beat = 60.0 / rng.uniform(70, 150)
    root = int(rng.integers(45, 58))
    scale = (0, 2, 4, 5, 7, 9, 11) if rng.random() < 0.6 else (0, 2, 3, 5, 7, 8, 10)
    degrees = rng.choice([0, 3, 4, 5, 1], size=rng.integers(2, 5))
    rolloff = rng.uniform(0.8, 2.0)
    amps = [k ** -rolloff for k in range(1, 7)]
    plucked = rng.random() < 0.6
    t = c.time()
    midi_hz = lambda m: 440.0 * 2.0 ** ((m - 69) / 12.0)  # noqa: E731
    chords = np.zeros(c.n)
    bass = np.zeros(c.n)
    onsets, beats, start, i = [], [], -rng.uniform(0, beat), 0
    while start < c.seconds:
        length = beat * rng.choice([2, 4])
        lo, hi = max(0, int(start * c.rate)), min(c.n, int((start + length) * c.rate))
        if hi > lo:
            degree = int(degrees[i % degrees.size])
            notes = [root + 12 * ((degree + s) // 7) + scale[(degree + s) % 7] for s in (0, 2, 4)]
            for note in notes:
                chords[lo:hi] += _tone(midi_hz(note), hi - lo, c.rate, amps, c.partial_limit, rng.uniform(0, 6.3))
            bass[lo:hi] += _tone(midi_hz(notes[0] - 12), hi - lo, c.rate, [1.0, 0.5, 0.25], c.partial_limit)
        eighths = start + np.arange(int(round(length / beat * 2))) * beat / 2
        on_beat = np.arange(eighths.size) % 2 == 0
        onsets.append(eighths[on_beat | (rng.random(eighths.size) < rng.uniform(0.3, 0.8))])
        beats.append(eighths[on_beat])
        start += length
        i += 1
    onsets, beats = np.concatenate(onsets), np.concatenate(beats)
    m = int(1.5 * c.rate)
    decay = _decay(m, c.rate, rng.uniform(0.1, 0.5) if plucked else 5.0, attack=0.005)
    rhythm = _place(c.n, c.rate, onsets, np.ones(onsets.size), decay)
    if not plucked:
        rhythm = np.minimum(rhythm, 1.0) * (1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    music = chords / _rms(chords) * rhythm + 0.5 * bass / _rms(bass) * _place(
        c.n, c.rate, beats, np.ones(beats.size), _decay(m, c.rate, 0.3, attack=0.005))
    if rng.random() < 0.5:  # drums: kick on every beat, hats on the eighths
        k = int(0.3 * c.rate)
        kick = np.sin(2 * np.pi * 60.0 * np.arange(k) / c.rate) * _decay(k, c.rate, 0.08)
        hat = _noise(rng, k, c.rate, highpass=5000.0) * _decay(k, c.rate, 0.01)
        music += rng.uniform(0.3, 1.0) * (_place(c.n, c.rate, beats, np.ones(beats.size), kick)
                                          + 0.3 * _place(c.n, c.rate, onsets, np.ones(onsets.size), hat))
    return music


CLASS_SYNTHESISERS: tuple[Callable[[np.random.Generator, _Canvas], np.ndarray], ...] = (
    _air_conditioner, _car_horn, _children_playing, _dog_bark, _drilling,
    _engine_idling, _gun_shot, _jackhammer, _siren, _street_music,
)
assert len(CLASS_SYNTHESISERS) == _NUM_CLASSES


def _source(class_id: int, rng: np.random.Generator, rate: int, seconds: float, config: SynthConfig) -> np.ndarray:
    """One class's signal at `rate`, peak 1."""
    if not 0 <= int(class_id) < _NUM_CLASSES:
        raise ValueError(f"class_id must be in 0..{_NUM_CLASSES - 1}, got {class_id}")
    n = int(round(seconds * rate))
    if n < 1:
        raise ValueError(f"a clip needs at least one sample ({seconds} s at {rate} Hz)")
    signal = CLASS_SYNTHESISERS[int(class_id)](rng, _Canvas(n, int(rate), config.partial_ceiling * rate))
    peak = float(np.max(np.abs(signal)))
    if not peak > 0.0:  # every class places its first event inside the clip: this is a bug
        raise RuntimeError(f"{URBANSOUND8K_CLASSES[class_id]} synthesised silence or NaN ({seconds} s at {rate} Hz)")
    return signal / peak


def _to_rate(signal: np.ndarray, rate: int, sample_rate: int, seconds: float) -> np.ndarray:
    """Resample a source to the file's rate (soxr) at exactly round(seconds·sample_rate) samples."""
    n = int(round(seconds * sample_rate))
    if rate != sample_rate:
        signal = soxr.resample(signal, rate, sample_rate, quality=RESAMPLE_QUALITY)
    if signal.size != n:
        signal = np.pad(signal[:n], (0, max(0, n - signal.size)))
    return signal


def synthesize_clip(class_id: int, rng: np.random.Generator, sample_rate: int, seconds: float,
                    config: SynthConfig | None = None) -> np.ndarray:
    """A clean example of one class: float32 mono, round(seconds·sample_rate) samples, peak 1.
    Synthesised at min(sample_rate, config.source_rate), resampled with soxr above that."""
    config = config or SynthConfig()
    rate = min(int(sample_rate), config.source_rate)
    signal = _to_rate(_source(class_id, rng, rate, seconds, config), rate, int(sample_rate), seconds)
    return (signal / max(float(np.max(np.abs(signal))), 1e-12)).astype(np.float32)


def _background(rng, n, rate, config: SynthConfig) -> np.ndarray:
    """Unit-RMS urban background: coloured noise with a random resonance and slow level changes."""
    noise = _noise(rng, n, rate, slope=rng.uniform(*config.background_slope),
                   lowpass=_loguniform(rng, 1500, 12000),
                   peaks=[(_loguniform(rng, 100, 3000), rng.uniform(0.5, 2.0), rng.uniform(0, 3))])
    t = np.arange(n, dtype=np.float32) / np.float32(rate)
    depth, hz, phase = rng.uniform(0, 0.3), rng.uniform(0.05, 0.5), rng.uniform(0, 6.3)
    return noise * (1.0 + np.float32(depth) * np.sin(np.float32(2 * np.pi * hz) * t + np.float32(phase)))


def render_clip(class_id: int, rng: np.random.Generator, sample_rate: int, seconds: float, channels: int,
                salience: int, config: SynthConfig) -> np.ndarray:
    """A dataset clip: the class, maybe a second class bleeding in, then `mix_scene`: background at a
    random SNR, mono or stereo (panned source, decorrelated noise), scaled to a random peak. (frames, channels)."""
    rate = min(int(sample_rate), config.source_rate)
    main = _source(class_id, rng, rate, seconds, config)
    level = _rms(main)
    if rng.random() < config.interpolate(config.bleed_probability_easy, config.bleed_probability_hard):
        other = (int(class_id) + int(rng.integers(1, _NUM_CLASSES))) % _NUM_CLASSES
        bleed = _source(other, rng, rate, seconds, config)
        main += bleed * (level / _rms(bleed) * _db(rng.uniform(*config.interpolate(config.bleed_db_easy,
                                                                                   config.bleed_db_hard))))
    return mix_scene(main, rng, rate, sample_rate, seconds, channels, salience, config)


def mix_scene(main: np.ndarray, rng: np.random.Generator, rate: int, sample_rate: int, seconds: float,
              channels: int, salience: int, config: SynthConfig) -> np.ndarray:
    """A source synthesised at `rate` made a file's frames: resampled to `sample_rate`, background at a
    random SNR (lower for salience 2), mono or stereo (panned source, decorrelated noise), scaled to a
    random peak. (frames, channels) float32."""
    main = _to_rate(main, rate, int(sample_rate), seconds)
    level = _rms(main)
    snr_db = rng.uniform(*config.interpolate(config.snr_db_easy, config.snr_db_hard))
    if salience == 2:
        snr_db -= config.background_salience_snr_penalty_db
    background = _background(rng, main.size, sample_rate, config) * (level / _db(snr_db))
    mix = np.empty((main.size, channels), dtype=np.float32)
    if channels == 1:
        mix[:, 0] = main + background
    else:
        pan = rng.uniform(-0.4, 0.4) + 0.5
        shift = int(rng.integers(main.size // 4, 3 * main.size // 4 + 1))
        mix[:, 0] = np.sqrt(1 - pan) * main + background
        mix[:, 1] = np.sqrt(pan) * main + np.roll(background, shift)
    mix *= np.float32(_db(rng.uniform(*config.peak_dbfs)) / max(float(np.max(np.abs(mix))), 1e-12))
    return mix


# ---------------------------------------------------------------------------------------------
# The dataset: who gets which fsID, format, length; files, CSV, progress.

_FSID_SLOTS = 1 << 16  # recordings per (fold, class) at most
_FSID_MODULUS = 1 << 24
_FSID_MULTIPLIER = 0x9E3779 | 1  # odd: k ↦ a·k + b mod 2^24 is a bijection, so fsIDs never collide
_GROUP_STREAM, _CORRUPT_STREAM = 1_000_001, 1_000_002  # seed words that set structure streams apart


@dataclass(frozen=True)
class _Recording:  # one source recording (fsID): its format and salience are shared by its slices
    fsid: int
    sample_rate: int
    subtype: str
    channels: int
    salience: int
    occurrence_starts: tuple[float, ...]


def _fsid(seed: int, k: int) -> int:
    return 1 + (_FSID_MULTIPLIER * k + seed * 7919 + 104_729) % _FSID_MODULUS


def _draw_format(rng, config: SynthConfig) -> tuple[int, str, int]:
    rates = np.asarray(config.sample_rate_weights, dtype=np.float64)
    subtypes = np.asarray(config.subtype_weights, dtype=np.float64)
    rate = int(config.sample_rates[rng.choice(len(rates), p=rates / rates.sum())])
    subtype = config.subtypes[rng.choice(len(subtypes), p=subtypes / subtypes.sum())]
    channels = 2 if rng.random() < config.stereo_probability else 1
    return rate, subtype, channels


def _clip_plan(seed, fold, class_id, count, config):
    """[(n, recording, occurrence, slice)] for the clips of one (fold, class)."""
    rng = np.random.default_rng([seed, fold, class_id, _GROUP_STREAM])
    sizes = np.asarray(config.slices_per_recording, dtype=np.float64)
    plan, n, group = [], 0, 0
    while n < count:
        size = min(count - n, 1 + int(rng.choice(sizes.size, p=sizes / sizes.sum())))
        occurrences = 1 if size == 1 or rng.random() < 0.7 else 2
        rate, subtype, channels = _draw_format(rng, config)
        salience = 2 if rng.random() < config.background_salience_probability else 1
        starts = tuple(float(s) for s in np.sort(np.round(rng.uniform(0, 120, occurrences), 3)))
        k = ((fold - 1) * _NUM_CLASSES + class_id) * _FSID_SLOTS + group
        recording = _Recording(_fsid(seed, k), rate, subtype, channels, salience, starts)
        per_occurrence = np.array_split(np.arange(size), occurrences)
        for occurrence, members in enumerate(per_occurrence):
            for slice_index, _ in enumerate(members):
                plan.append((n, recording, occurrence, slice_index))
                n += 1
        group += 1
    return plan


def clips_per_class(fold: int, clips_per_class_per_fold: int, imbalance: bool,
                    config: SynthConfig) -> list[int]:
    """Clips of each class in `fold`: the cumulative share rounded per fold, so that the totals over
    folds follow the imbalance ratios and a fold's count never depends on the other folds chosen."""
    if not imbalance:
        return [clips_per_class_per_fold] * _NUM_CLASSES
    ratios = config.imbalance_ratios
    return [int(math.floor(r * clips_per_class_per_fold * fold + 0.5))
            - int(math.floor(r * clips_per_class_per_fold * (fold - 1) + 0.5)) for r in ratios]


def _clip_seconds(rng, class_id, config: SynthConfig) -> float:
    if rng.random() < config.short_clip_probability[class_id]:
        return round(float(rng.uniform(config.min_seconds, config.full_seconds)), 6)
    return config.full_seconds


def parse_difficulty(value: str | float) -> float:
    """'easy' | 'medium' | 'hard' or a number in [0, 1]."""
    if isinstance(value, str) and value.strip().lower() in DIFFICULTY_LEVELS:
        return DIFFICULTY_LEVELS[value.strip().lower()]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTY_LEVELS)} or a number in [0, 1], "
                         f"got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {number}")
    return number


def prepare_out_dir(out: Path, overwrite: bool, remove_own: Callable[[Path], None]) -> None:
    """Make `out` ready for a dataset: absent or empty, else (with `overwrite`) `remove_own(out)` removes
    what a generator of that layout writes there; anything else in OUT stays. FileExistsError otherwise."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (use --overwrite to replace a dataset there)")
        remove_own(out)
    out.mkdir(parents=True, exist_ok=True)


def _remove_urbansound8k(out: Path) -> None:
    (out / METADATA_CSV).unlink(missing_ok=True)
    for fold in range(1, URBANSOUND8K_FOLDS + 1):
        shutil.rmtree(out / AUDIO_DIR / fold_dir_name(fold), ignore_errors=True)


NOT_AUDIO = (b"<html><head><title>404 Not Found</title></head>\n"
             b"<body>The requested sound was not found on this server.</body></html>\n")


def corrupt_bytes(kind: str, wav: Callable[[], bytes]) -> bytes:
    """An unreadable file of one of CORRUPT_KINDS: no bytes; the WAV `wav()` gives cut to a third of its
    data (the header still claims all of it); an HTML page."""
    if kind == "empty":
        return b""
    if kind == "text":
        return NOT_AUDIO
    data = wav()
    audio_start = data.index(b"data") + 8
    return data[: audio_start + (len(data) - audio_start) // 3]


def _corrupt_bytes(kind: str, rng, class_id: int, config: SynthConfig) -> bytes:
    return corrupt_bytes(kind, lambda: wav_bytes(render_clip(class_id, rng, SAMPLE_RATE, 1.0, 1, 1, config),
                                                 SAMPLE_RATE, "PCM_16"))


def generate_dataset(out_dir: str | os.PathLike, clips_per_class_per_fold: int = DEFAULT_CLIPS_PER_CLASS_PER_FOLD,
                     folds: Iterable[int] = range(1, URBANSOUND8K_FOLDS + 1), seed: int = 0, corrupt: int = 0,
                     difficulty: str | float | None = None, imbalance: bool = False,
                     progress: Callable[[str], None] | None = None, config: SynthConfig | None = None,
                     overwrite: bool = False) -> dict:
    """Write the dataset; returns a summary (rows, clips, corrupt, per_class, per_fold, seconds…).
    `difficulty` (a level name or 0–1) overrides `config.difficulty` when given; `progress(line)`
    receives a line per fold and one at the end (None: no lines)."""
    config = config or SynthConfig()
    if difficulty is not None:
        config = replace(config, difficulty=parse_difficulty(difficulty))
    folds = _checked_folds(folds, clips_per_class_per_fold, corrupt)
    say = progress or (lambda _line: None)
    out = Path(out_dir)
    prepare_out_dir(out, overwrite, _remove_urbansound8k)
    (out / METADATA_CSV).parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    rows: list[dict] = []
    per_class = {name: 0 for name in URBANSOUND8K_CLASSES}
    per_fold: dict[int, int] = {}
    audio_seconds = 0.0
    corrupt_by_fold = {f: [i for i in range(corrupt) if folds[i % len(folds)] == f] for f in folds}
    for fold in folds:
        fold_started = time.perf_counter()
        counts = clips_per_class(fold, clips_per_class_per_fold, imbalance, config)
        fold_rows, durations = _write_fold(out, fold, seed, counts, corrupt_by_fold[fold], config)
        rows += fold_rows
        for seconds in durations:
            audio_seconds += seconds
        for class_id, count in enumerate(counts):
            per_class[URBANSOUND8K_CLASSES[class_id]] += count
        per_fold[fold] = sum(counts)
        elapsed = time.perf_counter() - fold_started
        say(f"fold {fold}: {sum(counts)} clips + {len(corrupt_by_fold[fold])} corrupt in {elapsed:.1f} s "
            f"({sum(counts) / max(elapsed, 1e-9):.0f} clips/s)")
    write_csv(out / METADATA_CSV, rows)

    seconds = time.perf_counter() - started
    clips = sum(per_class.values())
    summary = {
        "out_dir": str(out), "rows": len(rows), "clips": clips, "corrupt": corrupt,
        "per_class": per_class, "per_fold": per_fold, "audio_seconds": round(audio_seconds, 3),
        "difficulty": config.difficulty, "seed": seed, "seconds": round(seconds, 3),
        "clips_per_second": round(clips / max(seconds, 1e-9), 1),
    }
    say(f"wrote {clips} clips + {corrupt} corrupt = {len(rows)} CSV rows to {out} "
        f"({audio_seconds / 60:.1f} min of audio, difficulty {config.difficulty:g}) "
        f"in {seconds:.1f} s ({summary['clips_per_second']:.0f} clips/s)")
    return summary


def _checked_folds(folds: Iterable[int], clips_per_class_per_fold: int, corrupt: int) -> list[int]:
    """The folds, sorted and unique; ValueError for an argument out of range."""
    folds = sorted(set(int(f) for f in folds))
    if not folds or any(not 1 <= f <= URBANSOUND8K_FOLDS for f in folds):
        raise ValueError(f"folds must be a non-empty subset of 1..{URBANSOUND8K_FOLDS}, got {folds}")
    if not 1 <= clips_per_class_per_fold < _FSID_SLOTS:
        raise ValueError(f"clips per class per fold must be in 1..{_FSID_SLOTS - 1}, got {clips_per_class_per_fold}")
    if corrupt < 0:
        raise ValueError(f"corrupt must be >= 0, got {corrupt}")
    return folds


def _write_fold(out: Path, fold: int, seed: int, counts: list[int], corrupt_ids: list[int],
                config: SynthConfig) -> tuple[list[dict], list[float]]:
    """Write one fold's clips (`counts` per class) and its corrupt files; their CSV rows, and each
    clip's duration in seconds."""
    fold_dir = out / AUDIO_DIR / fold_dir_name(fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    rows, durations = [], []
    for class_id, count in enumerate(counts):
        for n, rec, occurrence, slice_index in _clip_plan(seed, fold, class_id, count, config):
            rng = np.random.default_rng([seed, fold, class_id, n])
            seconds = _clip_seconds(rng, class_id, config)
            frames = render_clip(class_id, rng, rec.sample_rate, seconds, rec.channels, rec.salience, config)
            name = f"{rec.fsid}-{class_id}-{occurrence}-{slice_index}.wav"
            (fold_dir / name).write_bytes(wav_bytes(frames, rec.sample_rate, rec.subtype))
            start = rec.occurrence_starts[occurrence] + slice_index * config.full_seconds
            rows.append(_row(name, rec.fsid, start, seconds, rec.salience, fold, class_id))
            durations.append(frames.shape[0] / rec.sample_rate)
    for i in corrupt_ids:
        class_id = i % _NUM_CLASSES
        rng = np.random.default_rng([seed, fold, class_id, _CORRUPT_STREAM, i])
        fsid = _fsid(seed, URBANSOUND8K_FOLDS * _NUM_CLASSES * _FSID_SLOTS + i)
        name = f"{fsid}-{class_id}-0-0.wav"
        (fold_dir / name).write_bytes(_corrupt_bytes(CORRUPT_KINDS[i % len(CORRUPT_KINDS)], rng, class_id, config))
        start = float(np.round(rng.uniform(0, 120), 3))
        rows.append(_row(name, fsid, start, config.full_seconds, 1, fold, class_id))
    return rows, durations


def write_csv(csv_path: Path, rows: list[dict], columns=CSV_COLUMNS, sort_key: str = "slice_file_name") -> None:
    """A metadata CSV, rows sorted by `sort_key`; written beside and renamed, so a CSV is never partial."""
    rows.sort(key=lambda row: row[sort_key])
    partial = csv_path.with_suffix(".csv.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(csv_path)


def _row(name, fsid, start, seconds, salience, fold, class_id) -> dict:
    return {"slice_file_name": name, "fsID": fsid, "start": round(start, 6), "end": round(start + seconds, 6),
            "salience": salience, "fold": fold, "classID": class_id, "class": URBANSOUND8K_CLASSES[class_id]}
