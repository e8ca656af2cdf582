"""The data contract shared by every stage: audio format, classes, Example feature keys.

Nothing else declares these values. Imports no TensorFlow (Beam workers and the SageMaker
handler use it); Example I/O that needs TensorFlow lives in `tfdata.records`.
"""

SAMPLE_RATE = 22050  # Hz, every waveform after decoding
CLIP_SECONDS = 4
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS  # 88200: one model window
WINDOW_HOP_SAMPLES = SAMPLE_RATE * 2  # long audio: 4 s windows every 2 s, probabilities averaged

# Log-mel frontend (the seed's librosa defaults): 173 frames for one 4 s window.
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
N_FRAMES = 1 + CLIP_SAMPLES // HOP_LENGTH  # 173 (centred STFT)

# UrbanSound8K's classes in classID order.
CLASS_NAMES = (
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
NUM_CLASSES = len(CLASS_NAMES)
NUM_FOLDS = 10
DEFAULT_VAL_FOLD = 9
DEFAULT_TEST_FOLD = 10

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
KEY_SALIENCE = "salience"  # int64: 1 foreground, 2 background

# Dataset layout (UrbanSound8K's own) and the ingestion output layout.
METADATA_CSV = "metadata/UrbanSound8K.csv"
CSV_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
AUDIO_DIR = "audio"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.jsonl"
RECORD_SUFFIX = ".tfrecord"


def fold_dir_name(fold: int) -> str:
    """Directory holding one fold's audio (in the dataset) or shards (in the records)."""
    return f"fold{int(fold)}"


def fold_shard_glob(fold: int) -> str:
    """Glob, relative to the records directory, that finds every shard of a fold."""
    return f"{fold_dir_name(fold)}/*{RECORD_SUFFIX}"
