"""tfdata.synth_layouts and tfdata.synth_sounds (`us8k synth --layout esc50|folders|csv`): each layout's tree
and listing as its reader expects it (columns, file names, counts, folds, recordings never across folds,
formats libsndfile decodes, listed corrupt files the decoder rejects), class lists other than
UrbanSound8K's ten, the same bytes for the same seed, classes a simple model tells apart, and one-line
refusals. UrbanSound8K's own layout: tests/test_synth.py."""
from __future__ import annotations

import collections
import csv
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
from test_synth import all_bytes, log_bands

from cli import main
from tfdata import synth_layouts, synth_sounds
from tfdata.audio import AudioDecodeError, decode_audio
from tfdata.classes import ClassListError, check_class_names

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SIX_DEFAULT = ("bell", "hum", "chirp", "click", "rain", "buzz")
TWELVE_DEFAULT = SIX_DEFAULT + ("warble", "knock", "class_009", "class_010", "class_011", "class_012")
OWN_NAMES = ("door knock", "kettle", "fan.hum", "bird-song")
ESC50 = dict(num_classes=6, clips_per_class_per_fold=2, corrupt=3, seed=3)
FOLDERS = dict(classes=OWN_NAMES, clips_per_class=6, corrupt=3, seed=4)
CSV = dict(num_classes=12, folds=[1, 2, 3], clips_per_class_per_fold=2, corrupt=2, seed=5)
CSV_NO_FOLDS = dict(num_classes=3, fold_column=False, clips_per_class=5, corrupt=1, seed=6)
ESC50_NAME = re.compile(r"^([1-5])-(\d+)-([A-Z])-(\d+)\.wav$")


def build(tmp_path_factory, layout, kwargs):
    root = tmp_path_factory.mktemp(layout) / "data"
    lines = []
    summary = synth_layouts.generate(layout, root, progress=lines.append, **kwargs)
    return root, summary, lines


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def decodes(path: Path) -> bool:
    try:
        decode_audio(path)
        return True
    except AudioDecodeError:
        return False


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return build(tmp_path_factory, "esc50", ESC50)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build(tmp_path_factory, "folders", FOLDERS)


@pytest.fixture(scope="module")
def csv_layout(tmp_path_factory):
    return build(tmp_path_factory, "csv", CSV)


def test_esc50_tree_columns_names_folds_and_takes(esc50):
    root, summary, lines = esc50
    header, rows = read_csv(root / "meta" / "esc50.csv")
    assert header == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert len(rows) == summary["rows"] == 6 * 5 * 2 + 3
    assert files_under(root) == {"meta/esc50.csv"} | {f"audio/{row['filename']}" for row in rows}
    takes = collections.defaultdict(list)
    for row in rows:
        fold, src_file, take, target = ESC50_NAME.match(row["filename"]).groups()
        assert (fold, src_file, take, target) == (row["fold"], row["src_file"], row["take"], row["target"])
        assert row["category"] == SIX_DEFAULT[int(target)]
        assert row["esc10"] == ("True" if int(target) % 5 == 0 else "False")  # every fifth class, as ESC-10 in 50
        takes[src_file].append((row["fold"], row["target"], take))
    assert all(len({(fold, target) for fold, target, _ in t}) == 1 for t in takes.values())  # one fold, one class
    assert all(sorted(take for *_, take in t) == [chr(65 + i) for i in range(len(t))] for t in takes.values())
    assert max(len(t) for t in takes.values()) >= 2  # several takes cut from one recording
    assert collections.Counter(row["fold"] for row in rows) == {"1": 13, "2": 13, "3": 13, "4": 12, "5": 12}
    assert summary["class_names"] == list(SIX_DEFAULT) and summary["per_fold"] == {k: 12 for k in range(1, 6)}
    assert [line.split(":")[0] for line in lines[:-1]] == [f"fold {k}" for k in range(1, 6)]
    assert lines[-1].startswith("wrote 60 clips + 3 corrupt = 63 rows of meta/esc50.csv to ")


def test_esc50_audio_is_five_seconds_mono_44k_16bit_some_padded_and_corrupt_files_fail(esc50):
    root, _, _ = esc50
    _, rows = read_csv(root / "meta" / "esc50.csv")
    good, bad, padded = 0, 0, 0
    for row in rows:
        path = root / "audio" / row["filename"]
        if not decodes(path):
            bad += 1
            continue
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 1, "PCM_16", 5 * 44100)
        samples, _ = sf.read(path, dtype="int16")
        padded += not samples[-4410:].any()  # the last 0.1 s is digital silence: a shorter event, padded
        good += 1
    assert (good, bad) == (60, 3)
    assert 0 < padded < good


def test_folders_tree_depths_formats_and_files_a_reader_ignores(folders):
    root, summary, lines = folders
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(OWN_NAMES)
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["README.txt"]
    audio = [p for p in root.rglob("*") if p.suffix in (".wav", ".flac", ".ogg")]
    assert sorted(p.name for p in root.rglob("*.txt")) == ["README.txt", "notes.txt"]
    assert len(audio) == summary["rows"] == 4 * 6 + 3 and len(files_under(root)) == len(audio) + 2
    per_class = collections.Counter(p.relative_to(root).parts[0] for p in audio)
    assert per_class == {"door knock": 7, "kettle": 7, "fan.hum": 7, "bird-song": 6}  # corrupt: round robin
    assert {len(p.relative_to(root).parts) for p in audio} == {2, 3, 4}  # in the class folder, one or two deeper
    good = [p for p in audio if decodes(p)]
    assert len(good) == 24
    infos = [sf.info(p) for p in good]
    assert {p.suffix for p in good} == {".wav", ".flac", ".ogg"}
    assert {i.subtype for i in infos} >= {"PCM_16", "PCM_24", "FLOAT", "VORBIS"}
    assert {i.channels for i in infos} == {1, 2} and len({i.samplerate for i in infos}) >= 4
    assert all(0.5 - 1e-3 <= i.duration <= 6.0 + 1e-3 for i in infos)
    assert summary["per_fold"] == {} and summary["class_names"] == list(OWN_NAMES)
    assert [line.split(":")[0] for line in lines[:-1]] == [f"class {name}" for name in OWN_NAMES]
    assert lines[-1].startswith("wrote 24 clips + 3 corrupt = 27 audio files in 4 class folders (+ 2 not audio) to ")


def test_csv_tree_columns_groups_within_one_fold_and_twelve_classes(csv_layout):
    root, summary, lines = csv_layout
    header, rows = read_csv(root / "metadata.csv")
    assert header == ["file_name", "label", "fold", "group"]
    assert len(rows) == summary["rows"] == 12 * 3 * 2 + 2
    assert files_under(root) == {"metadata.csv"} | {row["file_name"] for row in rows}
    assert all(row["file_name"].startswith("clips/") for row in rows)
    good = [row for row in rows if decodes(root / row["file_name"])]
    assert len(good) == 72
    assert collections.Counter(row["label"] for row in good) == {name: 6 for name in TWELVE_DEFAULT}
    assert collections.Counter(row["fold"] for row in good) == {"1": 24, "2": 24, "3": 24}
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    assert all(len({(r["fold"], r["label"]) for r in members}) == 1 for members in groups.values())
    assert max(len(members) for members in groups.values()) >= 2  # clips cut from one recording share a group
    for members in groups.values():  # a recording's clips share its format
        formats = {(Path(r["file_name"]).suffix, sf.info(root / r["file_name"]).samplerate) for r in members
                   if r in good}
        assert len(formats) <= 1
    assert {Path(row["file_name"]).suffix for row in good} == {".wav", ".flac"}
    assert [line.split(":")[0] for line in lines[:-1]] == ["fold 1", "fold 2", "fold 3"]
    assert lines[-1].startswith("wrote 72 clips + 2 corrupt = 74 rows of metadata.csv to ")


def test_csv_without_a_fold_column(tmp_path_factory):
    root, summary, lines = build(tmp_path_factory, "csv", CSV_NO_FOLDS)
    header, rows = read_csv(root / "metadata.csv")
    assert header == ["file_name", "label", "group"]
    assert len(rows) == 3 * 5 + 1 and summary["per_fold"] == {}
    assert collections.Counter(row["label"] for row in rows if decodes(root / row["file_name"])) == {
        "bell": 5, "hum": 5, "chirp": 5}
    assert [line.split(":")[0] for line in lines[:-1]] == ["class bell", "class hum", "class chirp"]


SMALL = {"esc50": dict(num_classes=2, folds=[1, 2], clips_per_class_per_fold=2, corrupt=3),
         "folders": dict(classes=("a", "b"), clips_per_class=5, corrupt=3),
         "csv": dict(num_classes=2, folds=[1, 2], clips_per_class_per_fold=2, corrupt=3)}


def test_same_seed_same_bytes_other_seed_differs_and_a_fold_alone_is_the_same(tmp_path):
    for layout, kwargs in SMALL.items():
        synth_layouts.generate(layout, tmp_path / f"{layout}-a", seed=7, progress=None, **kwargs)
    first_done = time.monotonic()
    for layout, kwargs in SMALL.items():
        synth_layouts.generate(layout, tmp_path / f"{layout}-c", seed=8, progress=None, **kwargs)
    synth_layouts.generate("esc50", tmp_path / "esc50-fold2", seed=7, progress=None,
                           **{**SMALL["esc50"], "folds": [2], "corrupt": 0})
    # Float WAVs carry a PEAK chunk whose timestamp libsndfile takes from the clock, and Ogg streams a
    # random serial number: "b" is written at least 1.1 s after "a".
    time.sleep(max(0.0, 1.1 - (time.monotonic() - first_done)))
    for layout, kwargs in SMALL.items():
        synth_layouts.generate(layout, tmp_path / f"{layout}-b", seed=7, progress=None, **kwargs)
    subtypes = set()
    for layout in SMALL:
        first, second = all_bytes(tmp_path / f"{layout}-a"), all_bytes(tmp_path / f"{layout}-b")
        assert first == second, layout
        other = all_bytes(tmp_path / f"{layout}-c")
        assert sum(other.get(name) != data for name, data in first.items()) >= len(first) // 2, layout
        subtypes |= {sf.info(tmp_path / f"{layout}-a" / name).subtype for name in first
                     if name.endswith((".wav", ".flac", ".ogg")) and decodes(tmp_path / f"{layout}-a" / name)}
    assert {"FLOAT", "VORBIS"} <= subtypes  # the two encodings that vary by themselves are covered
    fold2 = all_bytes(tmp_path / "esc50-fold2")
    clips = {name: data for name, data in fold2.items() if name.startswith("audio/")}
    assert clips and all(name.startswith("audio/2-") for name in clips)
    assert all(all_bytes(tmp_path / "esc50-a")[name] == data for name, data in clips.items())


def test_default_names_any_count_and_class_points_that_do_not_move_with_the_count():
    assert synth_sounds.default_class_names(12) == TWELVE_DEFAULT
    thousand = synth_sounds.default_class_names(1000)
    assert check_class_names(thousand) == thousand and thousand[-1] == "class_1000"
    for bad in (1, 1001):
        with pytest.raises(ClassListError):
            synth_sounds.default_class_names(bad)
    for k in (0, 3, 9):  # the same class point, a narrower spread among more classes of its family
        few = [synth_sounds.draw_voice(k, 12, np.random.default_rng([k, n])) for n in range(50)]
        many = [synth_sounds.draw_voice(k, 800, np.random.default_rng([k, n])) for n in range(50)]
        family = synth_sounds.FAMILIES[k % 8]
        u = np.log([v.pitch_hz for v in many]) - np.log(family.pitch_hz[0])
        u /= np.log(family.pitch_hz[1] / family.pitch_hz[0])
        assert np.abs(u - synth_sounds.class_point(k)[0]).max() <= 0.1 / np.sqrt(100) + 1e-9
        assert np.ptp([v.pitch_hz for v in many]) < np.ptp([v.pitch_hz for v in few])


def test_generic_classes_are_learnable_from_simple_spectral_statistics(tmp_path):
    root = tmp_path / "learn"
    synth_layouts.generate("csv", root, num_classes=5, folds=[1, 2, 3, 4], clips_per_class_per_fold=4, seed=1,
                           progress=None)
    _, rows = read_csv(root / "metadata.csv")
    stats = []
    for row in rows:
        bands = log_bands(root / row["file_name"])
        stats.append(np.concatenate([bands.mean(0), bands.std(0), np.abs(np.diff(bands, axis=0)).mean(0)]))
    x, labels = np.stack(stats), np.array([row["label"] for row in rows])
    folds = np.array([row["fold"] for row in rows])
    scores = []
    for fold in np.unique(folds):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(x[folds != fold], labels[folds != fold])
        scores.append(np.mean(model.predict(x[folds == fold]) == labels[folds == fold]))
    print(f"held-out logistic accuracy, 5 generic classes: {np.mean(scores):.2f}")
    assert np.mean(scores) > 0.6  # chance 0.2


def test_overwrite_replaces_only_the_layouts_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synth_layouts.generate("folders", out, classes=("a", "b"), clips_per_class=1, progress=None)
    synth_layouts.generate("folders", out, classes=("a", "b"), clips_per_class=1, progress=None, overwrite=True)
    synth_layouts.generate("folders", out, classes=("c", "d"), clips_per_class=1, progress=None, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "c", "d", "keep.txt"]  # no stale class left
    synth_layouts.generate("csv", out, num_classes=2, folds=[1], clips_per_class_per_fold=1, progress=None,
                           overwrite=True)
    synth_layouts.generate("csv", out, num_classes=2, folds=[2], clips_per_class_per_fold=1, progress=None,
                           overwrite=True)
    _, rows = read_csv(out / "metadata.csv")
    assert {row["fold"] for row in rows} == {"2"}
    assert {f"clips/{p.relative_to(out / 'clips').as_posix()}" for p in (out / "clips").rglob("*") if p.is_file()} \
        == {row["file_name"] for row in rows}


REFUSED = [
    (["--layout", "esc50", "--folds", "6"], "the esc50 layout's folds are a non-empty subset of 1..5, got [6]"),
    (["--layout", "folders", "--folds", "1"],
     "the folders layout has no folds (`us8k ingest --num-folds K` assigns them): leave out --folds"),
    (["--layout", "csv", "--no-fold-column", "--folds", "1,2"],
     "a csv without a fold column has no folds (`us8k ingest --num-folds K` assigns them): leave out --folds"),
    (["--classes", "a,b"], "--classes and --num-classes are for the esc50, folders and csv layouts: urbansound8k "
                           "has UrbanSound8K's ten classes"),
    (["--layout", "esc50", "--num-classes", "1"], "--num-classes 1: 1 class(es): a class list has 2 to 1000"),
    (["--layout", "csv", "--num-classes", "1001"], "--num-classes 1001: 1001 class(es): a class list has 2 to 1000"),
    (["--layout", "esc50", "--no-fold-column"], "--no-fold-column is for the csv layout"),
    (["--layout", "esc50", "--clips-per-class", "3"],
     "--clips-per-class is for layouts without folds (folders, csv --no-fold-column); esc50 takes "
     "--clips-per-class-per-fold"),
    (["--layout", "folders", "--clips-per-class-per-fold", "3"],
     "the folders layout has no folds: give --clips-per-class, not --clips-per-class-per-fold"),
    (["--layout", "folders", "--clips-per-class", "0"], "clips per class must be in 1..65535, got 0"),
    (["--layout", "csv", "--imbalance"],
     "--imbalance is UrbanSound8K's class imbalance: the urbansound8k layout's only"),
    (["--layout", "esc50", "--corrupt", "-1"], "corrupt must be >= 0, got -1"),
]


@pytest.mark.parametrize("args, reason", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_flags_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys, args, reason):
    assert main(["synth", str(tmp_path / "out"), *args]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"us8k synth: error: {reason}\n" and captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, reason", [
    ("a,A", "class 'A' is listed twice (as 'a')"),
    ("a,undetermined", "class name 'undetermined' is the answer below the threshold, not a class"),
    ("a,,b", "--classes 'a,,b': an empty name (comma-separated names expected)"),
])
def test_bad_class_lists_are_usage_errors(tmp_path, capsys, value, reason):
    with pytest.raises(SystemExit) as refused:
        main(["synth", str(tmp_path / "out"), "--layout", "csv", "--classes", value])
    assert refused.value.code == 2
    assert f"us8k synth: error: argument --classes: {reason}\n" in capsys.readouterr().err


def test_cli_writes_a_folders_collection_with_its_lines(tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "us8k", "synth", str(out), "--layout", "folders", "--classes",
                           "siren,fan,drip", "--clips-per-class", "2", "--corrupt", "1", "--seed", "2"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["class siren", "class fan", "class drip"]
    assert lines[0].startswith("class siren: 2 clips + 1 corrupt in ")
    assert lines[-1].startswith(f"wrote 6 clips + 1 corrupt = 7 audio files in 3 class folders (+ 2 not audio) "
                                f"to {out} (folders layout, 3 classes, no folds, 6 recordings, ")
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "drip", "fan", "siren"]
