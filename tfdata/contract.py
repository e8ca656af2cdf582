"""The data contract shared by every stage: audio format, frontend parameters, classes, Example keys.

Nothing else declares these values. Imports no TensorFlow or numpy (Beam workers and the
SageMaker handler use it); Example I/O that needs TensorFlow lives in `tfdata.records`, the
frontend's layers in `models.frontend`.
"""
from __future__ import annotations

import dataclasses

SAMPLE_RATE = 22050  # Hz, every waveform after decoding
CLIP_SECONDS = 4
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS  # 88200: one model window
WINDOW_HOP_SAMPLES = SAMPLE_RATE * 2  # long audio: 4 s windows every 2 s, probabilities averaged
MAX_AUDIO_SECONDS = 600.0  # audio per endpoint request, and per file `us8k label` classifies (both defaults)
# Ingestion keeps up to this much of each clip, as the endpoint's windows (WINDOW_HOP_SAMPLES apart): one
# record per window, 29 at most (≈ 5 MB); audio past it is cut, counted in the manifest and the log.
MAX_CLIP_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class FrontendParams:
    """The log-mel frontend: librosa's `melspectrogram` defaults (the seed's) and a fixed dB reference.

    Stored parameters are the layer's arguments (`models.frontend.LogMelSpectrogram(**asdict(p))`);
    shapes that follow from them are properties, so no frame count is declared by hand.
    """

    sample_rate: int = SAMPLE_RATE  # Hz
    n_fft: int = 2048  # STFT frame and FFT length (samples); periodic Hann window
    hop_length: int = 512  # samples between frames; frames are centred (n_fft // 2 zeros each side)
    n_mels: int = 128  # Slaney-scale, area-normalised mel bands
    fmin: float = 0.0  # Hz, lowest mel band edge
    fmax: float | None = None  # Hz, highest mel band edge; None: sample_rate / 2
    ref_power: float = 1.0  # 0 dB = a mel band of power 1 (fixed, not each clip's max)
    amin: float = 1e-10  # power floor before the log (-100 dB): digital silence lands here
    top_db: float | None = 80.0  # floor each example at its own peak - top_db; None: no floor

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.fmin < self.fmax_hz:
            raise ValueError(f"fmin {self.fmin} must be below fmax {self.fmax_hz}")
        if self.amin <= 0:
            raise ValueError(f"amin must be positive, got {self.amin}")
        if self.top_db is not None and self.top_db < 0:
            raise ValueError(f"top_db must be non-negative, got {self.top_db}")

    @property
    def fmax_hz(self) -> float:
        """The highest mel band edge in Hz (`fmax`, or the Nyquist frequency when it is None)."""
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    @property
    def num_bins(self) -> int:
        """Frequency bins of one STFT frame: n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames of the centred STFT of `num_samples` samples: 1 + num_samples // hop_length."""
        return 1 + int(num_samples) // self.hop_length

    @property
    def frames_per_window(self) -> int:
        """Frames of one model window (CLIP_SAMPLES samples): 173 with the defaults."""
        return self.num_frames(CLIP_SAMPLES)


FRONTEND = FrontendParams()  # what every model, benchmark and test uses

# UrbanSound8K's classes in classID order: that layout's, and the classes of records written before
# manifests recorded a class list (tfdata.classes). Every other collection brings its own list.
URBANSOUND8K_CLASSES = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)
URBANSOUND8K_FOLDS = 10

# Below this top probability a prediction is "undetermined" (the seed's rule).
DEFAULT_THRESHOLD = 0.6
UNDETERMINED = "undetermined"

# tf.train.Example feature keys (one Example per clip).
KEY_AUDIO = "audio_pcm16"  # bytes: CLIP_SAMPLES little-endian int16 samples
KEY_NUM_SAMPLES = "num_samples"  # int64: valid samples before zero padding
KEY_LABEL = "label"  # int64: classID
KEY_CLASS = "class_name"  # bytes
KEY_FOLD = "fold"  # int64
KEY_FSID = "fsid"  # int64: Freesound ID of the source recording
KEY_FILE = "slice_file_name"  # bytes
KEY_SALIENCE = "salience"  # int64: 1 foreground, 2 background, 0 not given (layouts other than UrbanSound8K)
# A clip longer than one window is stored as its windows (tfdata.windowing), one Example each: these two
# keys are written only then (a one-window clip's Example is as before; parsing defaults to 0 and 1).
KEY_WINDOW = "window"  # int64: this window's index in its clip (starts at window · WINDOW_HOP_SAMPLES)
KEY_WINDOWS = "windows"  # int64: the clip's window count

# The collection layouts `us8k ingest` reads and `us8k synth` writes (docs/data.md), and their listings.
LAYOUT_URBANSOUND8K, LAYOUT_ESC50, LAYOUT_FOLDERS, LAYOUT_CSV = "urbansound8k", "esc50", "folders", "csv"
LAYOUTS = (LAYOUT_URBANSOUND8K, LAYOUT_ESC50, LAYOUT_FOLDERS, LAYOUT_CSV)
ESC50_CSV = "meta/esc50.csv"  # ESC-50's listing; its audio is ESC50_AUDIO_DIR/<filename>
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_AUDIO_DIR = "audio"
COLLECTION_CSV = "metadata.csv"  # the csv layout's listing at the root (Hugging Face AudioFolder's name)
COLLECTION_CSV_COLUMNS = ("file_name", "label", "fold", "group")  # fold and group optional

# UrbanSound8K's own layout and the ingestion output layout.
METADATA_CSV = "metadata/UrbanSound8K.csv"
CSV_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
AUDIO_DIR = "audio"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.jsonl"
RECORD_SUFFIX = ".tfrecord"
FOLD_DIR_PREFIX = "fold"


def fold_dir_name(fold: int) -> str:
    """Directory holding one fold's audio (in the dataset) or shards (in the records)."""
    return f"{FOLD_DIR_PREFIX}{int(fold)}"


def fold_shard_glob(fold: int) -> str:
    """Glob, relative to the records directory, that finds every shard of a fold."""
    return f"{fold_dir_name(fold)}/*{RECORD_SUFFIX}"
