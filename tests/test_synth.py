"""tfdata.synth: UrbanSound8K's layout and CSV, deterministic bytes, the real data's variety of formats,
listed corrupt files the decoder rejects, the imbalance option, and classes that are learnable but
not trivially so (a nearest-centroid and a linear model on simple spectral features, held-out folds)."""
import collections
import csv
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cli import main, parse_args
from tfdata import synth
from tfdata.audio import AudioDecodeError, decode_audio, fit_to_length
from tfdata.contract import AUDIO_DIR, CSV_COLUMNS, METADATA_CSV, SAMPLE_RATE, URBANSOUND8K_CLASSES

pytestmark = pytest.mark.timeout(180)

US8K_CLASSES = len(URBANSOUND8K_CLASSES)  # the layout's ten

FILE_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)\.wav$")
SHARED = dict(clips_per_class_per_fold=5, folds=[1, 2, 3, 4], seed=11, corrupt=4)


def read_rows(root: Path) -> list[dict]:
    with open(root / METADATA_CSV, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def audio_path(root: Path, row: dict) -> Path:
    return root / AUDIO_DIR / f"fold{row['fold']}" / row["slice_file_name"]


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def subtype_of(path: Path) -> str | None:
    try:
        return sf.info(path).subtype
    except (sf.LibsndfileError, RuntimeError):
        return None


def is_intact_wav(path: Path) -> bool:
    """libsndfile opens it and its data chunk holds all the bytes it declares."""
    if subtype_of(path) is None:
        return False
    data = path.read_bytes()
    start = data.index(b"data") + 8
    return len(data) - start >= int.from_bytes(data[start - 4:start], "little")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The default difficulty, 4 folds × 5 clips per class + 4 corrupt rows."""
    root = tmp_path_factory.mktemp("synth") / "UrbanSound8K"
    lines = []
    summary = synth.generate_dataset(root, progress=lines.append, **SHARED)
    return root, summary, lines


@pytest.fixture(scope="module")
def good_and_corrupt(dataset):
    root, _, _ = dataset
    rows = read_rows(root)
    intact = [is_intact_wav(audio_path(root, row)) for row in rows]
    return [r for r, ok in zip(rows, intact) if ok], [r for r, ok in zip(rows, intact) if not ok]


def test_layout_csv_columns_file_names_and_folds(dataset):
    root, summary, lines = dataset
    rows = read_rows(root)
    assert len(rows) == summary["rows"] == 4 * 5 * US8K_CLASSES + 4
    assert summary["clips"] == 200 and summary["corrupt"] == 4
    assert summary["per_class"] == {name: 20 for name in URBANSOUND8K_CLASSES}
    assert summary["per_fold"] == {fold: 50 for fold in (1, 2, 3, 4)}
    listed = {audio_path(root, row) for row in rows}
    on_disk = set((root / AUDIO_DIR).rglob("*.wav"))
    assert listed == on_disk  # every file listed, every row's file present, each in its fold's directory
    assert sorted(p.name for p in (root / AUDIO_DIR).iterdir()) == ["fold1", "fold2", "fold3", "fold4"]
    folds_of_fsid = collections.defaultdict(set)
    for row in rows:
        fsid, class_id, occurrence, slice_index = FILE_NAME.match(row["slice_file_name"]).groups()
        assert fsid == row["fsID"] and class_id == row["classID"]
        assert row["class"] == URBANSOUND8K_CLASSES[int(row["classID"])]
        assert row["salience"] in ("1", "2")
        assert 0.0 <= float(row["start"]) < float(row["end"])
        folds_of_fsid[row["fsID"]].add(row["fold"])
    assert all(len(folds) == 1 for folds in folds_of_fsid.values())  # an fsID never spans two folds
    assert len(folds_of_fsid) < len(rows)  # some recordings give several slices, as in the real data
    assert {row["salience"] for row in rows} == {"1", "2"}
    assert [row["slice_file_name"] for row in rows] == sorted(row["slice_file_name"] for row in rows)
    assert [line.split(":")[0] for line in lines[:-1]] == ["fold 1", "fold 2", "fold 3", "fold 4"]
    assert lines[-1].startswith("wrote 200 clips + 4 corrupt = 204 CSV rows")


def test_formats_vary_like_the_real_data(dataset, good_and_corrupt):
    root, _, _ = dataset
    good, _ = good_and_corrupt
    infos = [sf.info(audio_path(root, row)) for row in good]
    assert {i.subtype for i in infos} == {"PCM_U8", "PCM_16", "PCM_24", "FLOAT"}
    assert {i.channels for i in infos} == {1, 2}
    rates = collections.Counter(i.samplerate for i in infos)
    assert len(rates) >= 5 and set(rates) <= set(synth.SynthConfig().sample_rates)
    assert rates.most_common(1)[0][0] in (44100, 48000)
    durations = np.array([i.duration for i in infos])
    assert durations.min() >= 0.3 - 1e-3 and durations.max() <= 4.0 + 1e-3
    assert np.mean(np.isclose(durations, 4.0, atol=1e-3)) > 0.6  # most clips are full slices...
    assert np.sum(durations < 3.9) >= 5  # ...some are short
    for row, info in zip(good, infos):  # the CSV's start/end agree with the file
        assert float(row["end"]) - float(row["start"]) == pytest.approx(info.duration, abs=1e-3)


def test_corrupt_files_are_listed_and_rejected_while_every_good_file_decodes(dataset, good_and_corrupt):
    root, _, _ = dataset
    good, corrupt = good_and_corrupt
    assert len(corrupt) == 4 and len(good) == 200
    kinds = set()
    for row in corrupt:
        data = audio_path(root, row).read_bytes()
        kinds.add("empty" if not data else "truncated" if data.startswith(b"RIFF") else "text")
        with pytest.raises(AudioDecodeError):
            decode_audio(audio_path(root, row))
    assert kinds == {"empty", "truncated", "text"}
    for row in good:
        waveform = decode_audio(audio_path(root, row))
        assert waveform.dtype == np.float32 and np.isfinite(waveform).all()
        assert len(waveform) == pytest.approx((float(row["end"]) - float(row["start"])) * SAMPLE_RATE, abs=2)
        assert 0.0 < np.abs(waveform).max() <= 1.0


def test_same_seed_same_bytes_independent_of_order_other_seed_differs(tmp_path):
    kwargs = dict(clips_per_class_per_fold=2, folds=[1, 2], corrupt=3, progress=None)
    synth.generate_dataset(tmp_path / "a", seed=5, **kwargs)
    first_done = time.monotonic()
    synth.generate_dataset(tmp_path / "c", seed=5, **{**kwargs, "folds": [2], "corrupt": 0})
    synth.generate_dataset(tmp_path / "d", seed=6, **kwargs)
    # Float WAVs carry a timestamp that libsndfile fills with the clock: "b" is written at least 1.1 s
    # after "a" (the two datasets between count towards it).
    time.sleep(max(0.0, 1.1 - (time.monotonic() - first_done)))
    synth.generate_dataset(tmp_path / "b", seed=5, **kwargs)
    first, second = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b")
    assert "FLOAT" in {subtype_of(tmp_path / "a" / name) for name in first}  # the timestamped kind is covered
    assert first == second

    only_fold2 = all_bytes(tmp_path / "c")
    clips = {name: data for name, data in only_fold2.items() if name.endswith(".wav")}
    assert clips and all(first[name] == data for name, data in clips.items())

    other = all_bytes(tmp_path / "d")
    assert other[METADATA_CSV] != first[METADATA_CSV]


def test_imbalance_makes_car_horn_and_gun_shot_rarer(tmp_path):
    config = synth.SynthConfig()
    totals = np.sum([synth.clips_per_class(fold, 10, True, config) for fold in range(1, 11)], axis=0)
    assert totals[URBANSOUND8K_CLASSES.index("car_horn")] == 43 and totals[URBANSOUND8K_CLASSES.index("gun_shot")] == 37
    assert totals[URBANSOUND8K_CLASSES.index("dog_bark")] == 100
    summary = synth.generate_dataset(tmp_path / "imb", clips_per_class_per_fold=5, folds=[1, 2], seed=1,
                                     imbalance=True, progress=None)
    counts = summary["per_class"]
    assert counts["car_horn"] <= 0.5 * counts["dog_bark"] and counts["gun_shot"] <= 0.5 * counts["dog_bark"]
    assert counts["air_conditioner"] == counts["street_music"] == 10
    rows = read_rows(tmp_path / "imb")
    assert collections.Counter(row["class"] for row in rows) == collections.Counter(
        {name: n for name, n in counts.items() if n})


def test_synthesize_clip_gives_clean_float32_mono_per_class():
    config = synth.SynthConfig()
    for class_id in range(US8K_CLASSES):
        for rate, seconds in ((8000, 0.3), (22050, 4.0), (48000, 1.5)):
            clip = synth.synthesize_clip(class_id, np.random.default_rng([3, class_id]), rate, seconds, config)
            assert clip.dtype == np.float32 and clip.shape == (round(rate * seconds),)
            assert np.isfinite(clip).all() and np.abs(clip).max() == pytest.approx(1.0)
        again = synth.synthesize_clip(class_id, np.random.default_rng([3, class_id]), 48000, 1.5, config)
        assert np.array_equal(clip, again)
    with pytest.raises(ValueError):
        synth.synthesize_clip(US8K_CLASSES, np.random.default_rng(0), 22050, 1.0)


# A spectral summary any classifier could start from: log power in 40 bands (0–200 Hz, then log-spaced,
# each holding FFT bins) per 1024-sample frame at 22050 Hz, level-normalised (the model's dB frontend
# also discards absolute level).
EDGES_HZ = np.concatenate([[0.0], np.geomspace(200, SAMPLE_RATE / 2 + 1, 40)])
FFT_HZ = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
BANDS = np.stack([(FFT_HZ >= lo) & (FFT_HZ < hi) for lo, hi in zip(EDGES_HZ[:-1], EDGES_HZ[1:])], axis=1)
BANDS = BANDS / BANDS.sum(axis=0)


def log_bands(path) -> np.ndarray:
    clip, valid = fit_to_length(decode_audio(path))
    frames = np.lib.stride_tricks.sliding_window_view(clip[:max(valid, 1024)], 1024)[::512] * np.hanning(1024)
    bands = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ BANDS + 1e-10)  # (frames, 40)
    return bands - bands.mean()


def features(root: Path, rows: list[dict]):
    per_clip = [log_bands(audio_path(root, row)) for row in rows]
    mean_spectrum = np.stack([b.mean(axis=0) for b in per_clip])
    richer = np.stack([np.concatenate([b.mean(0), b.std(0), np.abs(np.diff(b, axis=0)).mean(0)]) for b in per_clip])
    labels = np.array([int(row["classID"]) for row in rows])
    folds = np.array([int(row["fold"]) for row in rows])
    return mean_spectrum, richer, labels, folds


def held_out_accuracy(x, labels, folds, fit_predict) -> float:
    """Mean accuracy over leave-one-fold-out splits."""
    scores = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        scores.append(np.mean(fit_predict(x[train], labels[train], x[test]) == labels[test]))
    return float(np.mean(scores))


def nearest_centroid(x_train, y_train, x_test):
    """Features standardised with the training statistics, then the closest class mean."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    z_train, z_test = (x_train - mean) / std, (x_test - mean) / std
    centroids = np.stack([z_train[y_train == c].mean(axis=0) for c in range(US8K_CLASSES)])
    return np.argmin(((z_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)


def logistic(x_train, y_train, x_test):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    return model.fit(x_train, y_train).predict(x_test)


def test_classes_are_learnable_but_not_trivially_at_the_default_difficulty(dataset, good_and_corrupt):
    root, _, _ = dataset
    good, _ = good_and_corrupt
    mean_spectrum, richer, labels, folds = features(root, good)
    centroids = np.stack([mean_spectrum[labels == c].mean(axis=0) for c in range(US8K_CLASSES)])
    gaps = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)[np.triu_indices(US8K_CLASSES, 1)]
    assert gaps.min() > 1.0  # every pair of class-mean log spectra differs (1.7–3.0 seen over seeds)
    chance = 1.0 / US8K_CLASSES
    nc = held_out_accuracy(richer, labels, folds, nearest_centroid)
    linear = held_out_accuracy(richer, labels, folds, logistic)
    print(f"held-out accuracy at the default difficulty: nearest centroid {nc:.2f}, logistic {linear:.2f}")
    assert nc > 4 * chance  # 0.58–0.66 seen over seeds
    assert linear < 0.95  # not trivially separable by simple spectral statistics (0.75–0.82 seen)


@pytest.mark.timeout(300)
def test_difficulty_knob_lowers_accuracy(tmp_path):
    scores = {}
    for level in ("easy", "hard"):
        root = tmp_path / level
        synth.generate_dataset(root, clips_per_class_per_fold=4, folds=[1, 2, 3], seed=2, difficulty=level,
                               progress=None)
        _, richer, labels, folds = features(root, read_rows(root))
        scores[level] = held_out_accuracy(richer, labels, folds, logistic)
    print(f"held-out logistic accuracy: {scores}")
    assert scores["easy"] > scores["hard"] + 0.2
    assert scores["hard"] > 2 * (1.0 / US8K_CLASSES)  # hard is still learnable


def test_refuses_a_non_empty_out_and_overwrite_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.generate_dataset(out, clips_per_class_per_fold=1, folds=[3], progress=None)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    synth.generate_dataset(out, clips_per_class_per_fold=1, folds=[3], progress=None, overwrite=True)
    synth.generate_dataset(out, clips_per_class_per_fold=1, folds=[4], progress=None, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / AUDIO_DIR).iterdir()) == ["fold4"]  # no stale fold left behind
    assert {row["fold"] for row in read_rows(out)} == {"4"}


@pytest.mark.parametrize("kwargs", [dict(folds=[0]), dict(folds=[]), dict(clips_per_class_per_fold=0),
                                    dict(corrupt=-1), dict(difficulty=1.5), dict(difficulty="extreme")])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synth.generate_dataset(tmp_path / "x", progress=None, **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_help_run_and_one_line_error(tmp_path):
    us8k = Path(sys.executable).parent / "us8k"
    help_text = subprocess.run([us8k, "synth", "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0
    for option in ("--clips-per-class-per-fold", "--folds", "--seed", "--corrupt", "--difficulty", "--imbalance",
                   "--overwrite"):
        assert option in help_text.stdout
    out = tmp_path / "cli"
    args = [us8k, "synth", str(out), "--clips-per-class-per-fold", "1", "--folds", "9,10", "--corrupt", "2",
            "--difficulty", "hard", "--seed", "3"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("fold 9: 10 clips + 1 corrupt") and lines[1].startswith("fold 10: 10 clips + 1 corrupt")
    assert lines[2].startswith("wrote 20 clips + 2 corrupt = 22 CSV rows") and "difficulty 1" in lines[2]
    assert len(read_rows(out)) == 22
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert again.stderr.strip() == f"us8k synth: error: {out} is not empty (use --overwrite to replace a dataset there)"


def test_cli_folds_are_comma_separated(capsys):
    """`us8k synth --folds` takes the comma-separated form of `us8k cv --folds`; anything else is a usage
    error (exit status 2) that says what it expects."""
    assert parse_args(["synth", "out", "--folds", "3,1, 2"]).folds == [3, 1, 2]
    assert parse_args(["synth", "out"]).folds is None  # each layout's own: urbansound8k's ten (the tree hash test)
    for bad in ("0,1", "1;2", "a", "1,,2", "", "11"):
        with pytest.raises(SystemExit) as refused:
            parse_args(["synth", "out", "--folds", bad])
        assert refused.value.code == 2
        assert (f"us8k synth: error: argument --folds: expected comma-separated fold numbers in 1..10, e.g. 1,2,3; "
                f"got {bad!r}") in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the space-separated form of before: its second fold is refused
        parse_args(["synth", "out", "--folds", "9", "10"])
    assert refused.value.code == 2 and "unrecognized arguments: 10" in capsys.readouterr().err


def tree_sha256(root: Path) -> str:
    """sha256 over the tree: each file's path relative to `root`, a NUL, then its bytes' sha256, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# `us8k synth OUT ARGS` (the urbansound8k layout) as written before issue 22 added the other layouts
# (commit 78b5a7f, this environment's pinned numpy, soxr and libsndfile): the trees' tree_sha256.
URBANSOUND8K_BEFORE_LAYOUTS = {
    ("--clips-per-class-per-fold", "2", "--folds", "2,5", "--corrupt", "3", "--seed", "7"):
        "30ed42b975bf214a0bf670e5daa89cc42c19d718b758fba90554fea8afd2d891",
    ("--layout", "urbansound8k", "--clips-per-class-per-fold", "1", "--folds", "1", "--difficulty", "hard",
     "--imbalance", "--seed", "0"):
        "2ee4bc2f40d6ae8ceea5281bae9e9cf49b7856defa45a0c7853b7e4e53e3097d",
}


@pytest.mark.parametrize("args", list(URBANSOUND8K_BEFORE_LAYOUTS))
def test_urbansound8k_layout_is_byte_for_byte_what_it_was(tmp_path, args):
    assert main(["synth", str(tmp_path / "out"), *args, "--quiet"]) == 0
    assert tree_sha256(tmp_path / "out") == URBANSOUND8K_BEFORE_LAYOUTS[args]
