"""serving.package: model.tar.gz in the SageMaker TF Serving layout, safe and reproducible, with every
module its handler imports: our numpy-only tfdata modules and the third-party ones, unpacked from
binary wheels for the container's CPython 3.12 (tests/test_container_handler.py runs one built for
this Python in an isolated interpreter)."""
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import wheel_cache
from cli_failure import failure

import serving.inference
import tfdata
import us8k
from serving.package import (
    CONTAINER_PYTHON,
    PackageError,
    _vendored_name,
    fetch_wheels,
    handler_modules,
    installed_pins,
    wheel_closure,
    write_package,
)
from tfdata.layout import METADATA_FILE, MODEL_SUBDIR, SAVED_MODEL_FILE, VERSION

pytestmark = pytest.mark.timeout(300)

VENDORED_DISTRIBUTIONS = {"cffi", "numpy", "pycparser", "soundfile", "soxr", "typing_extensions"}


def members(archive_path):
    with tarfile.open(archive_path, "r:gz") as archive:
        return archive.getmembers()


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    """The container target's wheels: the test run's one cache (tests/wheel_cache.py), read only."""
    return wheel_cache.container_wheels(tmp_path_factory)


@pytest.fixture
def pip_cache(tmp_path, monkeypatch):
    """pip's HTTP cache in the test's directory, not the user's ~/.cache/pip."""
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))


def test_handler_modules_follow_the_imports():
    modules = handler_modules()
    assert {"__init__.py", "contract.py", "audio.py", "layout.py", "pcm.py", "windowing.py"} <= set(modules)
    assert "records.py" not in modules and "pipeline.py" not in modules  # TensorFlow


def test_a_handler_importing_tensorflow_is_refused(tmp_path):
    handler = tmp_path / "inference.py"
    handler.write_text("from tfdata.pcm import to_pcm16\nfrom tfdata import records\n")
    with pytest.raises(PackageError, match="records.py imports tensorflow"):
        handler_modules(handler)
    handler.write_text("def lazy():\n    import tensorflow as tf\n")
    with pytest.raises(PackageError, match="inference.py imports tensorflow"):
        handler_modules(handler)


def test_layout(tiny_package, tiny_export):
    infos = members(tiny_package)
    files = {m.name for m in infos if m.isfile()}
    version_dir = tiny_export / MODEL_SUBDIR / VERSION
    saved_model = {f"{VERSION}/{p.relative_to(version_dir).as_posix()}" for p in version_dir.rglob("*") if p.is_file()}
    assert saved_model <= files and f"{VERSION}/{SAVED_MODEL_FILE}" in files
    assert f"{VERSION}/variables/variables.index" in files
    ours = {f"code/lib/tfdata/{m}" for m in handler_modules()} | {"code/inference.py", METADATA_FILE}
    vendored = files - saved_model - ours
    assert ours <= files and all(name.startswith("code/lib/") for name in vendored)
    assert "code/requirements.txt" not in files  # the container would ignore it beside code/lib/ anyway
    assert "code/lib/tfdata/records.py" not in files  # imports TensorFlow
    for module in ("numpy/__init__.py", "soundfile.py", "_soundfile.py", "soxr/__init__.py", "typing_extensions.py",
                   "pycparser/__init__.py", "cffi/__init__.py", "_cffi_backend.cpython-312-x86_64-linux-gnu.so"):
        assert f"code/lib/{module}" in vendored, module
    assert any(n.startswith("code/lib/_soundfile_data/libsndfile") for n in vendored)  # libsndfile 1.2
    assert not any(n.startswith("code/lib/av") for n in vendored)  # no PyAV / FFmpeg
    dist_infos = {n.split("/")[2] for n in vendored if ".dist-info/" in n}
    assert {d.split("-")[0] for d in dist_infos} == VENDORED_DISTRIBUTIONS
    for dist_info in dist_infos:
        names = [n for n in vendored if n.startswith(f"code/lib/{dist_info}/")]
        assert f"code/lib/{dist_info}/METADATA" in names and f"code/lib/{dist_info}/RECORD" not in names
        assert any(("LICENSE" in n.upper() or "COPYING" in n.upper()) for n in names), dist_info  # licences kept
    assert not [n for n in vendored if "/tests/" in n or n.endswith(".pyi")]
    for info in infos:
        assert info.isfile() or info.isdir()
        assert not info.name.startswith("/") and ".." not in info.name.split("/")
        assert (info.uid, info.gid, info.mtime) == (0, 0, 0)
    assert [m.name for m in infos] == sorted(m.name for m in infos if m.isdir()) + sorted(files)
    assert tiny_package.stat().st_size < 25e6


def test_contents_match_sources_and_wheels(tiny_package, tiny_export, wheel_dir):
    with tarfile.open(tiny_package, "r:gz") as archive:
        read = lambda name: archive.extractfile(name).read()  # noqa: E731
        assert read("code/inference.py") == Path(serving.inference.__file__).read_bytes()
        for module in handler_modules():
            assert read(f"code/lib/tfdata/{module}") == (Path(tfdata.__file__).parent / module).read_bytes()
        assert read(METADATA_FILE) == (tiny_export / METADATA_FILE).read_bytes()
        saved_model = f"{VERSION}/{SAVED_MODEL_FILE}"
        assert read(saved_model) == (tiny_export / MODEL_SUBDIR / saved_model).read_bytes()
        pins = installed_pins()
        (numpy_wheel,) = [w for w in fetch_wheels(CONTAINER_PYTHON, wheel_dir) if w.name.startswith("numpy-")]
        assert numpy_wheel.name.startswith(f"numpy-{pins['numpy']}-cp312-cp312-manylinux")
        with zipfile.ZipFile(numpy_wheel) as wheel:
            for name in ("numpy/__init__.py", "numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so"):
                assert read(f"code/lib/{name}") == wheel.read(name)


@pytest.fixture
def no_index(monkeypatch, pip_cache):
    """Every package index unreachable (a build that needed the network would fail)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no configured indexes or find-links
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")


def test_missing_wheels_without_network_is_an_error(tiny_export, tmp_path, no_index):
    with pytest.raises(PackageError, match="pip could not fetch wheels of numpy==.* for CPython 3.12"):
        write_package(tiny_export, tmp_path / "none.tar.gz", wheel_dir=tmp_path / "empty")
    assert not (tmp_path / "none.tar.gz").exists()


def test_every_dependency_must_be_pinned_and_present(wheel_dir, tmp_path):
    pins = installed_pins()
    chosen = wheel_closure(CONTAINER_PYTHON, wheel_dir, pins)
    assert {w.name.split("-")[0] for w in chosen} == VENDORED_DISTRIBUTIONS
    unpinned = {name: version for name, version in pins.items() if name != "typing-extensions"}
    with pytest.raises(PackageError, match="typing-extensions .needed by soundfile on CPython 3.12. is not installed"):
        wheel_closure(CONTAINER_PYTHON, wheel_dir, unpinned)
    partial = tmp_path / "partial"
    partial.mkdir()
    for wheel in chosen:
        if not wheel.name.startswith("cffi-"):
            shutil.copy(wheel, partial)
    with pytest.raises(PackageError, match=r"no wheel of cffi==.* for CPython 3.12"):
        wheel_closure(CONTAINER_PYTHON, partial, pins)
    with pytest.raises(PackageError, match="no wheel of numpy"):
        wheel_closure("3.9", wheel_dir, pins)  # the cp312 wheels do not fit another Python


@pytest.mark.parametrize("member, placed", [
    ("numpy/__init__.py", "numpy/__init__.py"),
    ("numpy/_core/tests/test_umath.py", None),
    ("soxr/soxr_ext.pyi", None),
    ("numpy-2.4.6.dist-info/RECORD", None),
    ("numpy-2.4.6.dist-info/licenses/LICENSE.txt", "numpy-2.4.6.dist-info/licenses/LICENSE.txt"),
    ("pkg-1.0.data/purelib/pkg/x.py", "pkg/x.py"),
    ("pkg-1.0.data/platlib/pkg/y.so", "pkg/y.so"),
    ("pkg-1.0.data/scripts/tool", None),
])
def test_wheel_members_placement(member, placed):
    assert _vendored_name(member) == placed


def test_cli_writes_the_archive_from_cached_wheels_the_same_bytes(tiny_export, tiny_package, tmp_path, wheel_dir,
                                                                    no_index, capsys):
    """`us8k package` with --wheel-dir holding the wheels: no network needed (every index unreachable
    here), and the same export and wheels give the same bytes as the run's tiny_package."""
    output = tmp_path / "out" / "model.tar.gz"
    assert us8k.main(["package", str(tiny_export), "--output", str(output), "--wheel-dir", str(wheel_dir)]) == 0
    out = capsys.readouterr().out
    assert "us8k package: packaging" in out and "for CPython 3.12" in out
    assert f"wheels for CPython 3.12 found in {wheel_dir} (no download)" in out
    assert "us8k package: vendoring cffi " in out and "numpy " in out and "us8k package: wrote" in out
    assert output.is_file() and not output.with_name("model.tar.gz.partial").exists()
    assert output.read_bytes() == tiny_package.read_bytes()
    with pytest.raises(SystemExit) as raised:
        us8k.main(["package", "--help"])
    assert raised.value.code == 0 and "--python-version" in capsys.readouterr().out


def test_cli_errors_are_one_line(tiny_export, tmp_path, pip_cache):
    assert re.search("us8k package: error: export directory not found",
                     failure(["package", str(tmp_path / "missing"), "--output", str(tmp_path / "m.tar.gz")]))
    no_metadata = tmp_path / "no_metadata"
    shutil.copytree(tiny_export, no_metadata)
    (no_metadata / METADATA_FILE).unlink()
    assert re.search("no metadata.json in",
                     failure(["package", str(no_metadata), "--output", str(tmp_path / "m.tar.gz")]))
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    (no_model / METADATA_FILE).write_text("{}")
    assert re.search("no SavedModel in", failure(["package", str(no_model), "--output", str(tmp_path / "m.tar.gz")]))
    linked = tmp_path / "linked"
    shutil.copytree(tiny_export, linked)
    (linked / MODEL_SUBDIR / VERSION / "assets" / "escape").symlink_to("/etc/passwd")
    assert re.search("symbolic link", failure(["package", str(linked), "--output", str(tmp_path / "m.tar.gz")]))
    assert re.search("us8k package: error: --python-version must look like 3.12",
                     failure(["package", str(tiny_export), "--output", str(tmp_path / "m.tar.gz"),
                              "--python-version", "py3"]))
    assert not (tmp_path / "m.tar.gz").exists()
