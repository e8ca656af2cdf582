"""The dataset layouts of `us8k ingest` (beam.layouts, beam.layout_csvs, beam.layout_folders) and the fold
assignment (beam.fold_assignment): detection, each reader on small trees written here, every bad-data
answer (a one-line error or a listed failure), the folds dealt by group (deterministic, a group in one
fold, balanced per class, K folds), and one real Beam ingest per new layout (esc50, csv, folders) whose
manifest (schema 2) and records carry the class names. ESC-50 is not downloadable here: its trees are
built from its documented columns. Also `us8k label`'s CSV INPUT: ESC-50's meta/esc50.csv and a csv
layout's metadata.csv name the files they list (a real MatchInput run)."""
import collections
import hashlib
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
from wav_files import encode

import us8k
from beam import ingest
from beam.fold_assignment import RULE, FoldAssignmentError, assign_folds, fold_of_groups
from beam.ingest_rows import BadRow, ClipRow, LayoutError, RowError, group_id, relative_path
from beam.layouts import detect_layout, read_collection
from tfdata import contract as c
from tfdata import records
from tfdata.classes import read_dataset_info

pytestmark = pytest.mark.timeout(120)

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"
LOOKED_FOR = ("looked for metadata/UrbanSound8K.csv (urbansound8k), meta/esc50.csv (esc50), metadata.csv (csv) "
              "and folders holding audio files (folders); --layout names one")


def tone(seconds: float = 0.5, rate: int = 8000, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)


def write(root, relative: str, data: bytes | str = b"") -> str:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return path


def hashed(value: str) -> int:
    """The documented int63 of a non-integer group: sha256's first 8 bytes, big-endian, shifted right by one."""
    digest = hashlib.sha256(value.encode()).digest()
    return int.from_bytes(digest[:8], "big") // 2


def cli_refusal(capsys, *args) -> str:
    """`us8k ARGS` in this process: exit status 1, nothing on stdout, one line on stderr (returned)."""
    capsys.readouterr()
    assert us8k.main(list(args)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n") and "\n" not in err[:-1], (out, err)
    return err[:-1]


def reasons(rows) -> dict:
    """{line or file: reason} of the BadRows."""
    return {(row.line if row.line is not None else row.file): row.reason for row in rows if isinstance(row, BadRow)}


# ------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("marker, layout", [("metadata/UrbanSound8K.csv", "urbansound8k"), ("meta/esc50.csv", "esc50"),
                                            ("metadata.csv", "csv"), ("dog/a.wav", "folders")])
def test_detection_finds_each_layout_by_what_it_holds(tmp_path, marker, layout):
    write(tmp_path, marker)
    write(tmp_path, "notes.txt", "not audio")
    assert detect_layout(str(tmp_path))[0] == layout


def test_detection_order_and_what_it_looked_for(tmp_path):
    write(tmp_path, "metadata.csv", "file_name,label\n")
    write(tmp_path, "dog/a.wav")
    assert detect_layout(str(tmp_path))[0] == "csv"  # a metadata.csv before folders of audio
    write(tmp_path, "meta/esc50.csv", ESC50_HEADER + "\n")
    assert detect_layout(str(tmp_path))[0] == "esc50"
    write(tmp_path, "metadata/UrbanSound8K.csv", ",".join(c.CSV_COLUMNS) + "\n")
    assert detect_layout(str(tmp_path))[0] == "urbansound8k"
    bare = tmp_path / "bare"
    write(bare, "top.wav")  # audio, but in no folder
    write(bare, "docs/readme.txt")
    with pytest.raises(LayoutError) as refused:
        detect_layout(str(bare))
    assert str(refused.value) == f"no dataset layout found in {bare} (2 file(s), none of them audio in a folder): " \
                                 + LOOKED_FOR


# ------------------------------------------------------------------------------------ shared checks
def test_group_ids_are_integers_as_written_or_a_stable_hash():
    assert group_id("100032") == 100032 and group_id(" -7 ") == -7 and group_id(str(2**63 - 1)) == 2**63 - 1
    for value in ("abc", "1_000", "12.0", str(2**63), "rec 7"):
        assert group_id(value) == hashed(value.strip()) and 0 <= group_id(value) < 2**63
    assert group_id("abc") != group_id("abd")


@pytest.mark.parametrize("text, reason", [("../x.wav", "outside the dataset root"),
                                          ("a/../../x.wav", "outside the dataset root"),
                                          ("/data/x.wav", "absolute path"), ("C:\\x.wav", "absolute path"),
                                          ("s3://bucket/x.wav", "absolute path"), ("", "empty file_name"),
                                          ("clips/", "names no file"), (".", "names no file")])
def test_paths_outside_the_root_are_refused(text, reason):
    with pytest.raises(RowError, match=reason):
        relative_path(text, "file_name")


def test_paths_inside_the_root_are_normalised():
    assert relative_path("clips/./a.wav", "file_name") == "clips/a.wav"
    assert relative_path("clips\\b\\..\\a.wav", "file_name") == "clips/a.wav"
    assert relative_path("a.wav", "file_name") == "a.wav"


# ------------------------------------------------------------------------------------ esc50
def esc50_tree(root, lines: list[str]) -> str:
    path = write(root, "meta/esc50.csv", "\n".join([ESC50_HEADER, *lines]) + "\n")
    for line in lines:
        name = line.split(",")[0]
        if "/" not in name and name not in ("", "..", "."):
            write(root, f"audio/{name}", tone())
    return path


def test_esc50_reader_names_classes_by_target_and_groups_by_src_file(tmp_path):
    esc50_tree(tmp_path, [
        "1-100-A-0.wav,1,0,dog,True,100,A",       # line 2
        "1-101-A-1.wav,1,1,rooster,False,101,A",  # 3
        "2-100-B-0.wav,2,0,dog,True,100,B",       # 4: the same recording as line 2
        "3-9-A-2.wav,3,2,rain,False,rec-9,A",     # 5: a group id that is no integer
        "4-1-A-0.wav,x,0,dog,True,1,A",           # 6: bad fold
        "../evil.wav,1,0,dog,True,5,A",           # 7: not a file name
        "1-100-A-0.wav,1,0,dog,True,100,A",       # 8: listed twice
        "5-2-A-1.wav,5,1,rooster,False,,A",       # 9: no src_file
    ])
    collection = read_collection(str(tmp_path))
    assert (collection.layout, collection.detected) == ("esc50", True)
    assert collection.class_names == ("dog", "rooster", "rain")
    assert collection.listing.groups == "src_file" and collection.fold_assignment == "dataset"
    clips = [r for r in collection.rows if isinstance(r, ClipRow)]
    assert [(r.line, r.relative_path, r.slice_file_name, r.label, r.class_name, r.fold, r.group) for r in clips] == [
        (2, "audio/1-100-A-0.wav", "1-100-A-0.wav", 0, "dog", 1, 100),
        (3, "audio/1-101-A-1.wav", "1-101-A-1.wav", 1, "rooster", 1, 101),
        (4, "audio/2-100-B-0.wav", "2-100-B-0.wav", 0, "dog", 2, 100),
        (5, "audio/3-9-A-2.wav", "3-9-A-2.wav", 2, "rain", 3, hashed("rec-9"))]
    assert reasons(collection.rows) == {6: "bad CSV row: fold 'x' is not an integer",
                                        7: "bad CSV row: filename '../evil.wav' is not a file name",
                                        8: "listed twice (line 2)", 9: "bad CSV row: empty src_file"}
    assert collection.source["rows"] == 8 and collection.source["invalid_rows"] == 4


@pytest.mark.parametrize("lines, error", [
    (["a.wav,1,0,dog,True,1,A", "b.wav,1,0,cat,True,2,A", "c.wav,1,1,cow,True,3,A"],
     "target 0 is 'dog' on line 2 and 'cat' on line 3"),
    (["a.wav,1,0,dog,True,1,A", "b.wav,1,2,cat,True,2,A"], "the targets must be 0..N-1 without gaps; missing 1"),
    (["a.wav,1,0,dog,True,1,A", "b.wav,1,1,Dog,True,2,A"], "the categories are not a class list: class 'Dog' is "
                                                           "listed twice (as 'dog')"),
])
def test_esc50_classes_that_contradict_one_another_are_one_line(tmp_path, lines, error):
    path = esc50_tree(tmp_path, lines)
    with pytest.raises(LayoutError) as refused:
        read_collection(str(tmp_path), "esc50")
    assert str(refused.value) == f"{path}: {error}"


# ------------------------------------------------------------------------------------ csv
def test_csv_reader_labels_groups_and_bad_rows(tmp_path):
    write(tmp_path, "metadata.csv", "\n".join([
        "file_name,label,group",
        "clips/a.wav,bird,r1",   # 2
        "clips/b.wav,bird,r1",   # 3: the same recording
        "c.wav,rain,",           # 4: no group: its own
        "../x.wav,bird,r2",      # 5: outside the root
        "/abs/y.wav,rain,",      # 6: absolute
        "clips/./a.wav,bird,r3",  # 7: line 2's file again
        "d.wav,,",               # 8: no label
        "e.wav,rain,7",          # 9
        "f.wav,bird,8",          # 10
    ]) + "\n")
    collection = read_collection(str(tmp_path), num_folds=2)
    assert (collection.layout, collection.class_names) == ("csv", ("bird", "rain"))
    assert collection.listing.groups == "group column"
    assert collection.fold_assignment == {"num_folds": 2, "rule": RULE}
    clips = {r.line: r for r in collection.rows if isinstance(r, ClipRow)}
    assert {line: (r.relative_path, r.label, r.class_name, r.group) for line, r in clips.items()} == {
        2: ("clips/a.wav", 0, "bird", hashed("r1")), 3: ("clips/b.wav", 0, "bird", hashed("r1")),
        4: ("c.wav", 1, "rain", hashed("c.wav")), 9: ("e.wav", 1, "rain", 7), 10: ("f.wav", 0, "bird", 8)}
    assert clips[2].fold == clips[3].fold and {r.fold for r in clips.values()} == {1, 2}
    assert reasons(collection.rows) == {
        5: "bad CSV row: file_name '../x.wav' is outside the dataset root",
        6: "bad CSV row: file_name '/abs/y.wav' is an absolute path, outside the dataset root",
        7: "listed twice (line 2)", 8: "bad CSV row: empty label"}
    assert collection.source["kind"] == "csv" and collection.source["invalid_rows"] == 4


def test_csv_with_folds_and_classes(tmp_path, capsys):
    write(tmp_path, "metadata.csv", "file_name,label,fold\na.wav,owl,1\nb.wav,bat,2\nc.wav,cow,1\nd.wav,owl,0\n")
    collection = read_collection(str(tmp_path), classes=("owl", "bat"))
    assert collection.class_names == ("owl", "bat") and collection.listing.classes_from == "--classes"
    assert collection.listing.groups == "none: each file is its own group"
    assert [(r.line, r.label, r.fold) for r in collection.rows if isinstance(r, ClipRow)] == [(2, 0, 1), (3, 1, 2)]
    assert reasons(collection.rows) == {4: "label 'cow' is not one of --classes",
                                        5: "bad CSV row: fold 0 (folds are numbered from 1)"}
    message = cli_refusal(capsys, "ingest", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--num-folds", "3")
    assert message == ("us8k ingest: error: --num-folds applies to data without folds; this csv layout's CSV sets "
                       "them (its fold column)")


@pytest.mark.parametrize("text, error", [
    ("", "metadata CSV is empty"), ("file_name,label\n", "metadata CSV has a header and no rows"),
    ("file_name,fold\na.wav,1\n", "metadata CSV header lacks column(s) label (found: file_name, fold)"),
])
def test_csv_without_rows_or_a_required_column_is_one_line(tmp_path, capsys, text, error):
    path = write(tmp_path, "metadata.csv", text)
    message = cli_refusal(capsys, "ingest", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out"))
    assert message == f"us8k ingest: error: {error}: {path}"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ folders
def test_folders_reader(tmp_path):
    for name in ("dog/a.wav", "dog/2024/b.FLAC", "cat/c.wav", "cat/d.mp3", "top.wav"):
        write(tmp_path, name)
    for name in ("cat/notes.txt", "README", ".hidden/e.wav", "dog/.f.wav"):
        write(tmp_path, name, "x")
    collection = read_collection(str(tmp_path), num_folds=2)
    assert (collection.layout, collection.detected, collection.class_names) == ("folders", True, ("cat", "dog"))
    assert collection.listing.ignored_files == 4 and collection.listing.classes_from == "the folder names, sorted"
    rows = {r.relative_path if isinstance(r, ClipRow) else r.file: r for r in collection.rows}
    assert sorted(rows) == ["cat/c.wav", "cat/d.mp3", "dog/2024/b.FLAC", "dog/a.wav", "top.wav"]
    assert [(rows[p].label, rows[p].class_name, rows[p].line) for p in ("cat/c.wav", "dog/2024/b.FLAC")] == [
        (0, "cat", None), (1, "dog", None)]
    assert rows["dog/a.wav"].group == hashed("dog/a.wav") and rows["dog/a.wav"].slice_file_name == "dog/a.wav"
    assert rows["top.wav"].reason == "not in a class folder: an audio file directly under the dataset root"
    for cls in ("cat", "dog"):  # two clips, two folds: one each
        assert sorted(r.fold for r in collection.rows if isinstance(r, ClipRow) and r.class_name == cls) == [1, 2]
    listing = "".join(f"{name}\t{size}\n" for name, size in sorted(
        (os.path.relpath(os.path.join(d, f), tmp_path), os.path.getsize(os.path.join(d, f)))
        for d, _, files in os.walk(tmp_path) for f in files))
    assert collection.source == {"kind": "folders", "path": str(tmp_path), "rows": 5, "invalid_rows": 1,
                                 "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def test_folders_with_classes(tmp_path):
    for name in ("dog/a.wav", "dog/b.wav", "cat/c.wav", "cat/d.wav", "owl/e.wav", "empty/readme.txt"):
        write(tmp_path, name)
    collection = read_collection(str(tmp_path), "folders", classes=("dog", "cat"), num_folds=2)
    assert collection.class_names == ("dog", "cat") and collection.listing.classes_from == "--classes"
    assert reasons(collection.rows) == {"owl/e.wav": "folder 'owl' is not one of --classes"}  # "empty": no class
    assert {r.relative_path: r.label for r in collection.rows if isinstance(r, ClipRow)} == {
        "cat/c.wav": 1, "cat/d.wav": 1, "dog/a.wav": 0, "dog/b.wav": 0}
    with pytest.raises(LayoutError) as refused:
        read_collection(str(tmp_path), "folders", classes=("dog", "bird"), num_folds=2)
    assert str(refused.value) == f"class(es) of --classes without audio: {tmp_path}/bird holds no audio file"


@pytest.mark.parametrize("extra, error", [
    ("empty/", "empty class folder: {root}/empty holds no audio file (.wav, .wave, .flac, .ogg, .oga, .opus…)"),
    ("notes/readme.txt", "empty class folder: {root}/notes holds no audio file (.wav, .wave, .flac, .ogg, .oga, "
                         ".opus…)"),
    ("bad@name/x.wav", "{root}: the folder names are not a class list: class name 'bad@name' is not 1 to 64 "
                       "characters among letters, digits, space, '_', '-' and '.', beginning with a letter or "
                       "digit, not ending with a space"),
])
def test_folders_that_are_no_class_are_one_line(tmp_path, capsys, extra, error):
    root = tmp_path / "data"
    for i in range(3):
        write(root, f"dog/{i}.wav")
        write(root, f"cat/{i}.wav")
    if extra.endswith("/"):
        os.makedirs(root / extra)
    else:
        write(root, extra)
    message = cli_refusal(capsys, "ingest", "--data-dir", str(root), "--output", str(tmp_path / "out"))
    assert message == "us8k ingest: error: " + error.format(root=root)


# ------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("args, error", [
    (["--classes", "dog,Dog"], "--classes: class 'Dog' is listed twice (as 'dog')"),
    (["--classes", "dog"], "--classes: 1 class(es): a class list has 2 to 1000"),
    (["--classes", "dog,,cat"], "--classes 'dog,,cat': an empty name (comma-separated names expected)"),
    (["--classes", "dog,undetermined"], "--classes: class name 'undetermined' is the answer below the threshold, "
                                        "not a class"),
    (["--num-folds", "1"], "--num-folds must be at least 2, got 1"),
    (["--classes", "dog,cat", "--layout", "esc50"], "--classes applies to the folders and csv layouts; the esc50 "
                                                    "layout's CSV names its classes"),
    (["--num-folds", "5", "--layout", "esc50"], "--num-folds applies to data without folds; this esc50 layout's "
                                                "CSV sets them (its fold column)"),
    (["--num-folds", "4"], "class 'cat' has 3 clip(s), fewer than the 4 folds to assign (--num-folds 4)"),
])
def test_options_refused_in_one_line(tmp_path, capsys, args, error):
    root = tmp_path / "data"
    for i in range(3):
        write(root, f"dog/{i}.wav")
        write(root, f"cat/{i}.wav")
        write(root, f"dog/{i + 3}.wav")
    if "esc50" in args:
        esc50_tree(root, ["a.wav,1,0,dog,True,1,A", "b.wav,2,1,cat,True,2,A"])
    message = cli_refusal(capsys, "ingest", "--data-dir", str(root), "--output", str(tmp_path / "out"), *args)
    assert message == f"us8k ingest: error: {error}"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ fold assignment
def clip(label: int, group: int, n: int = 0) -> ClipRow:
    return ClipRow(line=None, relative_path=f"{label}/{group}-{n}.wav", slice_file_name="", label=label,
                   class_name=f"c{label}", fold=0, group=group)


def test_folds_of_single_file_groups_are_balanced_per_class_and_deterministic():
    rows = [clip(label, 1000 * label + i) for label, count in enumerate((23, 10, 7)) for i in range(count)]
    assigned = assign_folds(rows, ("c0", "c1", "c2"), 5)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    again = {r.relative_path: r.fold for r in assign_folds(shuffled, ("c0", "c1", "c2"), 5)}
    assert {r.relative_path: r.fold for r in assigned} == again  # the rows' order does not matter
    for label, count in enumerate((23, 10, 7)):
        per_fold = collections.Counter(r.fold for r in assigned if r.label == label)
        assert set(per_fold) <= set(range(1, 6))
        assert sorted(per_fold.values()) == sorted([count // 5 + (k < count % 5) for k in range(5)])
    assert {r.fold for r in assigned} == {1, 2, 3, 4, 5}


def test_groups_stay_in_one_fold_and_are_dealt_largest_first():
    sizes = (5, 3, 3, 2, 1, 1, 1)  # largest first to the emptiest fold: 5 | 3+2 | 3+1+1, then the last 1 → fold 1
    rows = [clip(0, group, n) for group, size in enumerate(sizes) for n in range(size)]
    fold = fold_of_groups(rows, ("c0",), 3)
    per_fold = collections.Counter(fold[r.group] for r in rows)
    assert dict(per_fold) == {1: 6, 2: 5, 3: 5}
    assert fold[0] == 1  # the group of five went first, to fold 1


def test_a_group_spanning_classes_keeps_its_first_fold():
    rows = [clip(0, 7, 0), clip(0, 7, 1), clip(1, 7, 2)]  # group 7: two clips of class 0, one of class 1
    rows += [clip(0, g) for g in range(10, 14)] + [clip(1, g) for g in range(20, 24)]
    assigned = assign_folds(rows, ("c0", "c1"), 2)
    assert len({r.fold for r in assigned if r.group == 7}) == 1
    assert all(len({r.fold for r in assigned if r.group == g}) == 1 for g in {r.group for r in assigned})


def test_fold_assignment_refusals():
    rows = [clip(0, g) for g in range(6)] + [clip(1, g) for g in range(10, 13)]
    with pytest.raises(FoldAssignmentError) as refused:
        assign_folds(rows, ("c0", "c1"), 5)
    assert str(refused.value) == "class 'c1' has 3 clip(s), fewer than the 5 folds to assign (--num-folds 5)"
    with pytest.raises(FoldAssignmentError, match="at least 2, got 1"):
        assign_folds(rows, ("c0", "c1"), 1)


# ------------------------------------------------------------------------------------ real Beam runs
def ingested(out: str) -> list[dict]:
    files = records.fold_files(out, read_dataset_info(out).folds)
    return [{k: v.numpy() for k, v in records.parse_examples(s).items()} for s in tf.data.TFRecordDataset(files)]


def check_run(out: str, manifest: dict, class_names: list[str]) -> list[dict]:
    """The manifest on disk is the one returned, its counts agree with the records, which carry the names."""
    with open(os.path.join(out, c.MANIFEST_FILE)) as handle:
        assert json.load(handle) == manifest
    assert manifest["schema_version"] == 2 and manifest["class_names"] == class_names
    assert manifest["examples"] + manifest["errors"] == manifest["source"]["rows"]
    info = read_dataset_info(out)
    assert list(info.class_names) == class_names
    assert list(info.folds) == sorted(int(k) for k, f in manifest["folds"].items() if f["examples"])
    stored = ingested(out)
    assert len(stored) == manifest["examples"]
    for example in stored:
        assert example[c.KEY_CLASS].decode() == class_names[int(example[c.KEY_LABEL])]
    counted = collections.Counter((str(int(e[c.KEY_FOLD])), e[c.KEY_CLASS].decode()) for e in stored)
    for fold, entry in manifest["folds"].items():
        assert list(entry["classes"]) == class_names
        assert {k: v for k, v in entry["classes"].items() if v} == {n: k for (f, n), k in counted.items() if f == fold}
    assert manifest["classes"] == {name: sum(v for (f, n), v in counted.items() if n == name) for name in class_names}
    return stored


@pytest.mark.timeout(180)
def test_folders_ingest(tmp_path):
    root, out = tmp_path / "sounds", str(tmp_path / "records")
    for k, name in enumerate(("bird", "rain", "wind")):
        for i in range(3):
            write(root, f"{name}/{'deep/' if i == 2 else ''}{name}{i}.wav", tone(hz=300 + 200 * k + 10 * i))
    write(root, "rain/broken.wav")  # zero bytes: fails to decode
    write(root, "loose.wav", tone())  # in no class folder
    write(root, "wind/notes.txt", "ignored")
    lines = []
    manifest = ingest.run_ingest(str(root), out, ["--direct_num_workers=1"], progress=lines.append, num_folds=3)
    stored = check_run(out, manifest, ["bird", "rain", "wind"])
    assert manifest["layout"] == "folders" and manifest["groups"] == "none: each file is its own group"
    assert manifest["fold_assignment"] == {"num_folds": 3, "rule": RULE}
    assert manifest["source"]["kind"] == "folders" and manifest["source"]["rows"] == 11
    assert manifest["source"]["invalid_rows"] == 1 and (manifest["examples"], manifest["errors"]) == (9, 2)
    assert sorted(manifest["folds"]) == ["1", "2", "3"]  # three singleton groups per class: one in each fold
    assert all(entry["classes"]["bird"] == entry["classes"]["wind"] == 1 for entry in manifest["folds"].values())
    assert sorted(e[c.KEY_FILE].decode() for e in stored)[:3] == ["bird/bird0.wav", "bird/bird1.wav",
                                                                  "bird/deep/bird2.wav"]
    with open(os.path.join(out, c.ERRORS_FILE)) as handle:
        errors = [json.loads(line) for line in handle]
    assert [(e["file"], e["line"], e["reason"][:20]) for e in errors] == [
        ("loose.wav", None, "not in a class folde"), ("rain/broken.wav", None, "empty input (0 bytes")]
    text = "\n".join(lines)
    assert f"us8k ingest: layout folders (detected): 11 audio files under {root}" in text
    assert "1 other file(s) ignored" in text and "groups: none in the data: each file is its own group" in text
    assert "folds: 3 assigned by group (--num-folds 3" in text
    assert "9 clips written + 2 failed == 11 audio files found (nothing lost)" in text


@pytest.mark.timeout(180)
def test_esc50_ingest(tmp_path):
    root, out = tmp_path / "ESC-50", str(tmp_path / "records")
    names = ("chainsaw", "crow", "sea waves")
    lines = [f"{fold}-{300 + 3 * fold + target}-A-{target}.wav,{fold},{target},{name},False,{300 + fold},A"
             for fold in (1, 2, 3, 4) for target, name in enumerate(names)]
    esc50_tree(root, lines + ["9-1-A-0.wav,1,0,chainsaw,False,1,A"])  # listed, never written
    os.remove(root / "audio" / "9-1-A-0.wav")
    manifest = ingest.run_ingest(str(root), out, ["--direct_num_workers=1"], progress=None)
    stored = check_run(out, manifest, list(names))
    assert manifest["layout"] == "esc50" and manifest["groups"] == "src_file"
    assert manifest["fold_assignment"] == "dataset" and sorted(manifest["folds"]) == ["1", "2", "3", "4"]
    assert (manifest["examples"], manifest["errors"], manifest["source"]["rows"]) == (12, 1, 13)
    assert {(int(e[c.KEY_FOLD]), int(e[c.KEY_FSID])) for e in stored} == {(f, 300 + f) for f in (1, 2, 3, 4)}
    assert all(int(e[c.KEY_SALIENCE]) == 0 for e in stored)


@pytest.mark.timeout(180)
def test_csv_ingest_with_classes_and_groups(tmp_path):
    root, out = tmp_path / "sounds", str(tmp_path / "records")
    rows = ["file_name,label,group"]
    for k, name in enumerate(("bird", "wind")):
        for i in range(6):
            write(root, f"clips/{name}{i}.wav", tone(hz=300 + 300 * k + 20 * i))
            rows.append(f"clips/{name}{i}.wav,{name},{name}-rec{i // 2}")  # three recordings per class
    rows += ["../outside.wav,bird,x", "clips/bird0.wav,bird,bird-rec0", "clips/owl.wav,owl,y"]
    write(root, "metadata.csv", "\n".join(rows) + "\n")
    lines = []
    manifest = ingest.run_ingest(str(root), out, ["--direct_num_workers=1"], progress=lines.append,
                                 classes=("wind", "bird"), num_folds=3)
    stored = check_run(out, manifest, ["wind", "bird"])  # --classes sets the label order
    assert manifest["layout"] == "csv" and manifest["groups"] == "group column"
    assert (manifest["examples"], manifest["errors"], manifest["source"]["rows"]) == (12, 3, 15)
    folds_of = collections.defaultdict(set)
    for example in stored:
        folds_of[int(example[c.KEY_FSID])].add(int(example[c.KEY_FOLD]))
    assert len(folds_of) == 6 and all(len(f) == 1 for f in folds_of.values())  # a recording in one fold
    assert all(entry["classes"] == {"wind": 2, "bird": 2} for entry in manifest["folds"].values())
    with open(os.path.join(out, c.ERRORS_FILE)) as handle:
        errors = {e["line"]: e["reason"] for e in map(json.loads, handle)}
    assert errors == {14: "bad CSV row: file_name '../outside.wav' is outside the dataset root",
                      15: "listed twice (line 2)", 16: "label 'owl' is not one of --classes"}
    assert "us8k ingest: layout csv (detected): 15 rows in" in "\n".join(lines)
    assert "classes: 2 from --classes: wind, bird" in "\n".join(lines)


# ------------------------------------------------------------------------------------ us8k label's CSV INPUT
@pytest.mark.timeout(120)
def test_label_csv_input_names_esc50_and_metadata_csv_files(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from beam import driver
    from beam.label import plan_label
    from beam.label_transforms import MatchInput

    esc50 = tmp_path / "ESC-50"
    esc50_tree(esc50, ["1-1-A-0.wav,1,0,dog,True,1,A", "1-2-A-1.wav,2,1,cat,True,2,A", "../x.wav,1,0,dog,True,3,A"])
    sounds = tmp_path / "sounds"
    write(sounds, "metadata.csv", "file_name,label\nclips/a.wav,bird\nb.wav,rain\n")
    plans = [plan_label(str(esc50 / "meta" / "esc50.csv"), "model", str(tmp_path / "out"), check=False),
             plan_label(str(sounds / "metadata.csv"), "model", str(tmp_path / "out"), check=False)]
    assert [p.kind for p in plans] == ["csv", "csv"]
    with beam.Pipeline(options=driver.pipeline_options(["--direct_num_workers=1"])) as pipeline:
        for i, plan in enumerate(plans):
            refs = pipeline | f"Match{i}" >> MatchInput(plan.kind, plan.input, plan.pattern, plan.csv_columns,
                                                        plan.csv_root)
            named = refs | f"Named{i}" >> beam.Map(lambda ref: (ref.path, ref.problem))
            expected = ([(str(esc50 / "audio" / "1-1-A-0.wav"), None), (str(esc50 / "audio" / "1-2-A-1.wav"), None),
                         (None, "bad CSV row: filename '../x.wav' is not a file name")] if i == 0 else
                        [(str(sounds / "clips" / "a.wav"), None), (str(sounds / "b.wav"), None)])
            assert_that(named, equal_to(expected), label=f"Files{i}")
