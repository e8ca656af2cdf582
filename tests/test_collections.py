"""Any labelled collection through the whole product: for each new layout (esc50, csv) a synthetic
collection with classes other than UrbanSound8K's ten goes `us8k synth` → `us8k ingest` → `us8k train`
(tiny) → `us8k export`, and `us8k label` labels the collection with the export; the folders layout
takes the whole path as `us8k demo --layout folders` does (every stage its own process, on to
`us8k package` → `us8k serve` of the model.tar.gz → `us8k predict`), then `us8k label`. Past the
export nothing depends on the layout, so one layout goes on to the endpoint here; the endpoint's
/metadata and the listening page with a model of other classes are tests/test_page.py's. Every answer
carries the collection's class names: the manifest's, the run's, the export's metadata, the
endpoint's answers and the labelling job's predictions and summary.

ESC-50 itself cannot be downloaded here: its tree is synthetic, built from its documented columns."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import wheel_cache
from synth_data import synth_layout

import us8k
from tfdata import contract as c

pytestmark = pytest.mark.timeout(420)

# layout: (us8k synth options, us8k ingest options, the class names synth gives it)
COLLECTIONS = {
    "esc50": ({"classes": ("dog", "rain", "door knock"), "clips_per_class_per_fold": 2}, [],
              ["dog", "rain", "door knock"]),
    "csv": ({"num_classes": 4, "clips_per_class_per_fold": 2}, [], ["bell", "chirp", "click", "hum"]),
}
FOLDERS_NAMES = ["bell", "chirp", "click", "hum", "rain"]  # us8k synth --layout folders' default five


def run(capsys, *argv) -> str:
    """`us8k ARGV` in this process; its stdout (it must succeed)."""
    capsys.readouterr()
    status = us8k.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 0, (argv[0], out[-2000:], err[-2000:])
    return out


def check_labelling(capsys, root: Path, export: Path, labels: Path, class_names: list[str]) -> None:
    run(capsys, "label", root, "--model", export, "--output", labels, "--direct_num_workers=1")
    summary = json.loads((labels / "summary.json").read_text())
    assert list(summary["classes"]) == class_names
    predictions = [json.loads(line) for line in (labels / "predictions.jsonl").read_text().splitlines()]
    assert predictions and all(list(p["probabilities"]) == class_names for p in predictions)
    assert {p["label"] for p in predictions} <= set(class_names) | {c.UNDETERMINED}


@pytest.mark.parametrize("layout", sorted(COLLECTIONS))
def test_a_collection_goes_from_its_files_to_answers_with_its_own_classes(layout, tmp_path, tmp_path_factory,
                                                                          capsys):
    synth_options, ingest_options, names = COLLECTIONS[layout]
    root = synth_layout(tmp_path_factory, layout, seed=1, **synth_options)
    assert names != list(c.URBANSOUND8K_CLASSES) and len(names) != len(c.URBANSOUND8K_CLASSES)
    records, run_dir, export = (tmp_path / n for n in ("records", "run", "export"))

    out = run(capsys, "ingest", "--data-dir", root, "--output", records, *ingest_options)
    assert f"us8k ingest: layout {layout} (detected)" in out
    manifest = json.loads((records / c.MANIFEST_FILE).read_text())
    assert manifest["layout"] == layout and manifest["schema_version"] == 2
    assert sorted(manifest["class_names"]) == sorted(names)  # label order: sorted, or the CSV's targets
    class_names = manifest["class_names"]
    assert manifest["examples"] + manifest["errors"] == manifest["source"]["rows"]
    folds = sorted(int(k) for k, f in manifest["folds"].items() if f["examples"])

    out = run(capsys, "train", "--records", records, "--output", run_dir, "--models", "tiny", "--epochs", "2",
              "--batch-size", "16", "--verbose", "0")
    assert f"Classes: {len(names)}" in out
    assert f"validation {folds[-2]}, test {folds[-1]}" in out  # the dataset's last two folds, by default
    assert json.loads((run_dir / "report" / "report.json").read_text())["class_names"] == class_names

    run(capsys, "export", run_dir, "--output", export)
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["class_names"] == class_names and metadata["num_classes"] == len(names)
    check_labelling(capsys, root, export, tmp_path / "labels", class_names)


def test_the_demo_of_a_folder_collection_runs_every_stage(tmp_path, tmp_path_factory, capsys):
    """`us8k demo --layout folders`: synth (five generic classes, three corrupt files) → ingest (ten folds
    assigned) → train → export → package → serve → predict, each its own process; then `us8k label`."""
    work = tmp_path / "demo"
    cache = wheel_cache.cache_home(tmp_path_factory, tmp_path / "cache")  # its `us8k package`: the run's wheels
    done = subprocess.run([sys.executable, "-m", "us8k", "demo", "--layout", "folders", "--workdir", str(work),
                           "--clips-per-class-per-fold", "2", "--models", "tiny", "--epochs", "1",
                           "--batch-size", "8"], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((work / "records" / c.MANIFEST_FILE).read_text())
    assert manifest["layout"] == "folders" and manifest["class_names"] == FOLDERS_NAMES
    assert (manifest["examples"], manifest["errors"]) == (2 * 10 * len(FOLDERS_NAMES), 3)
    assert manifest["fold_assignment"]["num_folds"] == 10
    assert "Folds: train [1, 2, 3, 4, 5, 6, 7, 8], validation 9, test 10" in done.stdout
    assert json.loads((work / "export" / "metadata.json").read_text())["class_names"] == FOLDERS_NAMES
    assert f"us8k serve: {len(FOLDERS_NAMES)} classes" in done.stdout
    lines = [line.split("\t") for line in done.stdout.splitlines() if line.count("\t") == 2]
    assert len(lines) == 5 + 2  # five files, then two JSON waveforms
    assert {fields[1] for fields in lines} <= set(FOLDERS_NAMES) | {c.UNDETERMINED}
    truth = re.search(r"\(true classes, from the folder names: (.*)\)", done.stdout).group(1)
    assert [pair.split(": ")[1] for pair in truth.split(", ")] == FOLDERS_NAMES  # one file of each class
    check_labelling(capsys, work / "sounds", work / "export", tmp_path / "labels", FOLDERS_NAMES)
