"""tfdata.classes: the class-name rules, `--classes` lists, and what a records directory's manifest says
(schema 2's list, schema 1 and no manifest read as UrbanSound8K's, a newer schema refused)."""
import json

import pytest

from tfdata import classes
from tfdata import contract as c
from tfdata.classes import ClassListError, check_class_names, read_dataset_info

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("name", ["dog", "Car horn", "a", "x" * classes.MAX_NAME_LENGTH, "v1.2-b_c", "9"])
def test_valid_names(name):
    assert classes.check_class_name(name) == name


@pytest.mark.parametrize("name", ["", " dog", "dog ", "-dog", "dog/bark", "dög", "x" * (classes.MAX_NAME_LENGTH + 1),
                                  "a\tb", "Undetermined", 7, None])
def test_invalid_names_say_the_rule(name):
    with pytest.raises(ClassListError, match="class name"):
        classes.check_class_name(name)


def test_list_sizes_and_duplicates():
    assert check_class_names(["a", "b"]) == ("a", "b")
    assert len(check_class_names([f"c{i}" for i in range(classes.MAX_CLASSES)])) == classes.MAX_CLASSES
    with pytest.raises(ClassListError, match="1 class"):
        check_class_names(["a"])
    with pytest.raises(ClassListError, match=f"{classes.MAX_CLASSES + 1} class"):
        check_class_names([f"c{i}" for i in range(classes.MAX_CLASSES + 1)])
    with pytest.raises(ClassListError, match="'dog' is listed twice"):
        check_class_names(["dog", "cat", "dog"])
    with pytest.raises(ClassListError, match=r"'Dog' is listed twice \(as 'dog'\)"):
        check_class_names(["dog", "Dog"])


def test_parse_class_list():
    assert classes.parse_class_list("dog, cat,bird") == ("dog", "cat", "bird")
    with pytest.raises(ClassListError, match="empty name"):
        classes.parse_class_list("dog,,cat")


def _shard(root, fold):
    path = root / c.fold_dir_name(fold) / f"x-00000-of-00001{c.RECORD_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_manifest_schema_2_gives_the_list_and_the_folds_with_records(tmp_path):
    (tmp_path / c.MANIFEST_FILE).write_text(json.dumps({
        "schema_version": 2, "layout": "esc50", "class_names": ["dog", "rain", "siren"],
        "folds": {"1": {"examples": 4}, "2": {"examples": 0}, "3": {"examples": 2}, "5": {"examples": 1}}}))
    info = read_dataset_info(tmp_path)
    assert info.class_names == ("dog", "rain", "siren") and info.num_classes == 3
    assert info.folds == (1, 3, 5) and info.default_split() == (3, 5)
    assert info.schema_version == 2 and "layout esc50" in info.source


def test_older_records_read_as_urbansound8k(tmp_path):
    for fold in (1, 2, 10):
        _shard(tmp_path, fold)
    (tmp_path / "folder").mkdir()
    info = read_dataset_info(tmp_path)  # no manifest: the shards on disk, UrbanSound8K's classes
    assert info.class_names == c.URBANSOUND8K_CLASSES and info.folds == (1, 2, 10) and info.schema_version == 1
    assert info.default_split() == (2, 10)
    (tmp_path / c.MANIFEST_FILE).write_text(json.dumps({"folds": {str(k): {"examples": 3} for k in range(1, 11)}}))
    info = read_dataset_info(tmp_path)  # schema 1: written before manifests carried a class list
    assert info.class_names == c.URBANSOUND8K_CLASSES and info.folds == tuple(range(1, 11))
    assert info.default_split() == (9, 10) and "schema 1" in info.source


@pytest.mark.parametrize("manifest, message", [
    ({"schema_version": 3, "class_names": ["a", "b"]}, "schema version 3; this version reads 1 to 2"),
    ({"schema_version": 2, "folds": {}}, "lacks class_names"),
    ({"schema_version": 2, "class_names": ["a", "a"], "folds": {}}, "listed twice"),
    ([1, 2], "not a JSON object"),
])
def test_manifests_a_run_cannot_use_are_refused_in_one_line(tmp_path, manifest, message):
    (tmp_path / c.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ClassListError, match=message) as caught:
        read_dataset_info(tmp_path)
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_split_needs_three_folds(tmp_path):
    (tmp_path / c.MANIFEST_FILE).write_text(json.dumps({
        "schema_version": 2, "class_names": ["a", "b"], "folds": {"1": {"examples": 1}, "2": {"examples": 1}}}))
    with pytest.raises(ClassListError, match="at least 3 folds"):
        read_dataset_info(tmp_path).default_split()
