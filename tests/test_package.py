"""serving.package: model.tar.gz in the SageMaker TF Serving layout, safe and reproducible, whose
code/inference.py imports and runs with only code/lib (+ site-packages), without TensorFlow."""
import importlib.metadata
import io
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import serving.inference
import tfdata
import us8k
from serving.package import write_package
from tfdata.layout import METADATA_FILE, MODEL_SUBDIR, SAVED_MODEL_FILE, VERSION

pytestmark = pytest.mark.timeout(180)

LIB_FILES = {"code/lib/tfdata/__init__.py", "code/lib/tfdata/contract.py", "code/lib/tfdata/audio.py",
             "code/lib/tfdata/layout.py", "code/lib/tfdata/batching.py"}


def members(archive_path):
    with tarfile.open(archive_path, "r:gz") as archive:
        return archive.getmembers()


def test_layout(tiny_package, tiny_export):
    infos = members(tiny_package)
    files = {m.name for m in infos if m.isfile()}
    version_dir = tiny_export / MODEL_SUBDIR / VERSION
    saved_model = {f"{VERSION}/{p.relative_to(version_dir).as_posix()}" for p in version_dir.rglob("*") if p.is_file()}
    assert saved_model <= files and f"{VERSION}/{SAVED_MODEL_FILE}" in files
    assert f"{VERSION}/variables/variables.index" in files
    assert files == saved_model | LIB_FILES | {"code/inference.py", "code/requirements.txt", METADATA_FILE}
    assert "code/lib/tfdata/records.py" not in files  # imports TensorFlow
    for info in infos:
        assert info.isfile() or info.isdir()
        assert not info.name.startswith("/") and ".." not in info.name.split("/")
        assert (info.uid, info.gid, info.mtime) == (0, 0, 0)
    assert [m.name for m in infos] == sorted(m.name for m in infos if m.isdir()) + sorted(files)


def test_contents_match_sources_and_pins(tiny_package, tiny_export):
    with tarfile.open(tiny_package, "r:gz") as archive:
        read = lambda name: archive.extractfile(name).read()  # noqa: E731
        assert read("code/inference.py") == Path(serving.inference.__file__).read_bytes()
        for name in LIB_FILES:
            assert read(name) == (Path(tfdata.__file__).parent / Path(name).name).read_bytes()
        assert read(METADATA_FILE) == (tiny_export / METADATA_FILE).read_bytes()
        saved_model = f"{VERSION}/{SAVED_MODEL_FILE}"
        assert read(saved_model) == (tiny_export / MODEL_SUBDIR / saved_model).read_bytes()
        pins = read("code/requirements.txt").decode().split()
    assert pins == [f"{name}=={importlib.metadata.version(name)}" for name in ("soundfile", "soxr", "av", "numpy")]


def test_same_export_gives_the_same_bytes(tiny_export, tiny_package, tmp_path):
    again = write_package(tiny_export, tmp_path / "again.tar.gz")
    assert again.read_bytes() == tiny_package.read_bytes()


def test_inference_imports_in_isolation_without_tensorflow(tiny_package, tmp_path):
    root = tmp_path / "opt_ml_model"
    with tarfile.open(tiny_package, "r:gz") as archive:
        archive.extractall(root, filter="data")
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(30000) / 7)).astype(np.float32), 16000, format="WAV")
    (tmp_path / "clip.wav").write_bytes(buf.getvalue())
    # -I: no PYTHONPATH / user site; -S: no site-packages .pth files (the repo is installed
    # editable through one). Only code/lib and the venv's site-packages are on the path.
    script = textwrap.dedent(f"""
        import collections, importlib.util, io, json, sys
        sys.path.insert(0, {str(root / 'code' / 'lib')!r})
        sys.path.append({sysconfig.get_paths()['purelib']!r})
        spec = importlib.util.spec_from_file_location("inference", {str(root / 'code' / 'inference.py')!r})
        inference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(inference)
        import tfdata
        from tfdata import layout
        Context = collections.namedtuple("Context", "custom_attributes request_content_type accept_header")
        ctx = Context("threshold=0.05,windows=true", "audio/wav", "application/json")
        request = json.loads(inference.input_handler(open("clip.wav", "rb"), ctx))
        probs = [[0.01] * 9 + [0.91]]
        Response = collections.namedtuple("Response", "status_code content")
        outputs = {{layout.OUTPUT_PROBABILITIES: probs, layout.OUTPUT_WINDOW_PROBABILITIES: [probs],
                    layout.OUTPUT_WINDOW_COUNT: [1], layout.OUTPUT_CLASS_ID: [9],
                    layout.OUTPUT_CLASS_NAME: ["street_music"]}}
        body, content_type = inference.output_handler(Response(200, json.dumps({{"outputs": outputs}})), ctx)
        print(json.dumps({{
            "tensorflow": "tensorflow" in sys.modules,
            "serving": importlib.util.find_spec("serving") is not None,
            "models": importlib.util.find_spec("models") is not None,
            "tfdata": tfdata.__file__,
            "threshold": inference.container_config().threshold,
            "lengths": request["inputs"][layout.INPUT_LENGTHS],
            "answer": json.loads(body), "content_type": content_type}}))
    """)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tensorflow"] is False
    assert report["serving"] is False and report["models"] is False  # the repo is not on the path
    assert report["tfdata"].startswith(str(root / "code" / "lib"))
    assert report["threshold"] == json.loads((root / METADATA_FILE).read_text())["threshold"]  # beside code/
    assert report["lengths"] == [int(round(30000 * 22050 / 16000))]
    (prediction,) = report["answer"]["predictions"]
    assert prediction["label"] == "street_music" and prediction["confidence"] == 0.91
    assert prediction["windows"][0]["start_s"] == 0.0
    assert report["content_type"] == "application/json"


def test_cli_writes_the_archive(tiny_export, tmp_path, capsys):
    output = tmp_path / "out" / "model.tar.gz"
    assert us8k.main(["package", str(tiny_export), "--output", str(output)]) == 0
    assert "us8k package: wrote" in capsys.readouterr().out
    assert output.is_file() and not output.with_name("model.tar.gz.partial").exists()


def test_cli_errors_are_one_line(tiny_export, tmp_path):
    with pytest.raises(SystemExit, match="us8k package: error: export directory not found"):
        us8k.main(["package", str(tmp_path / "missing"), "--output", str(tmp_path / "m.tar.gz")])
    no_metadata = tmp_path / "no_metadata"
    shutil.copytree(tiny_export, no_metadata)
    (no_metadata / METADATA_FILE).unlink()
    with pytest.raises(SystemExit, match="no metadata.json in"):
        us8k.main(["package", str(no_metadata), "--output", str(tmp_path / "m.tar.gz")])
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    (no_model / METADATA_FILE).write_text("{}")
    with pytest.raises(SystemExit, match="no SavedModel in"):
        us8k.main(["package", str(no_model), "--output", str(tmp_path / "m.tar.gz")])
    linked = tmp_path / "linked"
    shutil.copytree(tiny_export, linked)
    (linked / MODEL_SUBDIR / VERSION / "assets" / "escape").symlink_to("/etc/passwd")
    with pytest.raises(SystemExit, match="symbolic link"):
        us8k.main(["package", str(linked), "--output", str(tmp_path / "m.tar.gz")])
    assert not (tmp_path / "m.tar.gz").exists()
