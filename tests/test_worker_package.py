"""What a Dataflow worker installs. Beam's worker boot (apache/beam sdks/python/container/boot.go,
installSetupPackages → pipInstallPackage(…, "workflow.tar.gz", …, extras nil)) runs `pip install` on
the staged --setup_file sdist without extras, inside Beam's Python SDK container, which has
apache-beam[gcp] installed and not boto3 (Beam's `aws` extra). So what an s3:// or gs:// job imports
on a worker has to be in the sdist's base requirements (setup.py's CORE).

In the suite: the sdist is built by Beam's own stager code (Stager._build_setup_package: `python -m
build --sdist --no-isolation`, else `python setup.py sdist`, as for --setup_file), and its base
requirements (the egg-info's requires.txt before the first [extra] section: setup.py's
install_requires as setuptools evaluated it; the sdist's PKG-INFO, Metadata-Version 2.1 from
setuptools 65.5, lists no Requires-Dist, and pip on the worker evaluates the same setup.py again) are
checked against every third-party module the worker-side modules import (the
modules the job's pickled DoFns and functions reference, and what they import) and against what Beam
itself needs there (boto3 for s3://, google-crc32c for TFRecord CRCs). Deviation from a worker: the
requirements are read, not installed, and not in Beam's container.

Opt-in (US8K_WORKER_INSTALL_TEST=1; minutes, it installs TensorFlow): a clean Python 3.11 venv runs
docs/dataflow/Dockerfile's own pip line on that sdist (no extras, -c constraints.txt), then in that
venv Beam's FileSystems reads an object from a moto S3 server with Beam's S3 options, and our worker
modules import from the installed package. Deviations: a venv of this machine's python3.11 instead of
Beam's container (which adds apache-beam[gcp] and its dependencies, none of which an s3:// job
needs), and pip's index as configured here.
"""
import ast
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "docs", "dataflow", "Dockerfile")
LOCAL_PACKAGES = ("beam", "tfdata", "models", "serving", "benchmarks")
# What the jobs' graphs hold (DoFns, functions, the sink, the model handler), pickled by reference: the
# modules a worker imports. The drivers (beam.ingest, beam.label, beam.driver) run only where the job is submitted.
WORKER_ROOTS = ("beam.ingest_transforms", "beam.sinks", "beam.label_transforms", "beam.label_model")
BEAM_ON_WORKERS = {"boto3": "Beam's S3 filesystem (s3://)", "google-crc32c": "Beam's TFRecord CRCs"}
BUCKET = "us8k-worker"
OPT_IN = "US8K_WORKER_INSTALL_TEST"


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return normalised(re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0])


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist Beam's stager builds for --setup_file=setup.py."""
    from apache_beam.runners.portability.stager import Stager

    return Stager._build_setup_package(os.path.join(REPO, "setup.py"), str(tmp_path_factory.mktemp("sdist")))


def base_requirements(sdist_path: str) -> list[str]:
    """The sdist's requires.txt, its lines before the first [extra] section."""
    with tarfile.open(sdist_path) as archive:
        top = archive.getnames()[0].split("/")[0]
        requires = archive.extractfile(f"{top}/urbansound8k.egg-info/requires.txt").read().decode()
    base = []
    for line in requires.splitlines():
        if line.startswith("["):
            break
        if line.strip():
            base.append(line.strip())
    return base


def module_file(name: str) -> str | None:
    path = os.path.join(REPO, *name.split("."))
    for candidate in (path + ".py", os.path.join(path, "__init__.py")):
        if os.path.exists(candidate):
            return candidate
    return None


def imported_names(path: str):
    """Every module an Import / ImportFrom names in the file, function-level ones included."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def worker_third_party_modules() -> dict[str, set[str]]:
    """Top-level third-party modules imported by the worker-side modules (from WORKER_ROOTS,
    following our own imports): {module: {our modules importing it}}."""
    seen, found, todo = set(), {}, list(WORKER_ROOTS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imported_names(module_file(module)):
            top = name.split(".")[0]
            if top in LOCAL_PACKAGES:
                if module_file(name):
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found


def test_the_staged_sdist_requires_what_workers_import(sdist):
    base = base_requirements(sdist)
    names = {requirement_name(line) for line in base}
    providers = importlib.metadata.packages_distributions()
    modules = worker_third_party_modules()
    assert {"apache_beam", "numpy", "soundfile", "soxr", "av", "tensorflow"} <= set(modules)  # the scan sees them
    missing = {module: sorted(users) for module, users in modules.items()
               if not {normalised(d) for d in providers.get(module, [])} & names}
    assert missing == {}, f"imported on workers, not in setup.py's CORE: {missing}"
    assert not {name for name in BEAM_ON_WORKERS if name not in names}, BEAM_ON_WORKERS


def test_base_pins_match_the_constraints(sdist):
    """The worker installs the versions tested here: every pin of the base requirements is the
    constraints file's (US8K_TF_PACKAGE aside, which swaps the TensorFlow wheel)."""
    with open(os.path.join(REPO, "constraints.txt")) as handle:
        pins = {requirement_name(line): line.split("==", 1)[1].strip()
                for line in handle if "==" in line and not line.startswith("#")}
    base = base_requirements(sdist)
    for line in base:
        name, version = line.split("==", 1)
        assert pins.get(requirement_name(name)) == version.strip(), line
    assert "boto3==1.44.8" in base


def dockerfile_pip_args() -> list[str]:
    """The Dockerfile's `pip install …` arguments (its one RUN line), after `pip`."""
    with open(DOCKERFILE) as handle:
        text = handle.read().replace("\\\n", " ")
    (run,) = [line for line in text.splitlines() if line.startswith("RUN ")]
    command = shlex.split(run[4:].split("&&")[0])
    assert command[:2] == ["pip", "install"]
    return command[1:]


def test_the_dockerfile_starts_from_beams_container_and_installs_the_sdist_without_extras():
    import apache_beam

    with open(DOCKERFILE) as handle:
        froms = [line.split()[1] for line in handle if line.startswith("FROM ")]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert froms == [f"apache/beam_python{python}_sdk:{apache_beam.__version__}"]
    args = dockerfile_pip_args()
    assert args[args.index("-c") + 1].endswith("/constraints.txt")
    (package,) = [a for a in args if a.endswith(".tar.gz")]
    assert os.path.basename(package) == "urbansound8k-0.1.0.tar.gz" and "[" not in package  # no extras


WORKER_SCRIPT = """
import sys
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

url, path = sys.argv[1], sys.argv[2]
FileSystems.set_options(PipelineOptions(["--s3_endpoint_url", url, "--s3_region_name", "us-east-1",
                                         "--s3_access_key_id", "testing", "--s3_secret_access_key", "testing"]))
with FileSystems.open(path) as handle:
    print("read:", handle.read().decode())
import beam, beam.ingest_transforms, beam.sinks, beam.label_transforms, beam.label_model, beam.files, beam.notices
print("package:", beam.__file__)
"""


@pytest.mark.skipif(os.environ.get(OPT_IN) != "1",
                    reason=f"installs the sdist and TensorFlow into a clean venv (minutes): set {OPT_IN}=1 to run it")
@pytest.mark.timeout(1800)
def test_installed_without_extras_the_package_reads_s3_through_beam(sdist, tmp_path):
    python311 = shutil.which("python3.11")
    assert python311, f"{OPT_IN}=1 asks for a clean Python 3.11 venv, and no python3.11 is on PATH"
    from moto_s3 import s3_server

    venv = tmp_path / "venv"
    subprocess.run([python311, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    local = {"/tmp/us8k/constraints.txt": os.path.join(REPO, "constraints.txt"),
             "/tmp/us8k/urbansound8k-0.1.0.tar.gz": sdist}
    args = [local.get(a, a) for a in dockerfile_pip_args()]
    started = time.perf_counter()
    installed = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=1500)
    assert installed.returncode == 0, installed.stderr[-3000:]
    print(f"clean install of the sdist: {time.perf_counter() - started:.0f} s")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    versions = dict(line.split("==", 1) for line in listed.split() if "==" in line)
    assert versions.get("boto3") == "1.44.8" and versions.get("apache-beam") == "2.77.0"
    with s3_server(BUCKET) as (url, client):
        client.put_object(Bucket=BUCKET, Key="worker/check.txt", Body=b"read on a worker")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        done = subprocess.run([python, "-c", WORKER_SCRIPT, url, f"s3://{BUCKET}/worker/check.txt"],
                              capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "read: read on a worker" in done.stdout
    package = done.stdout.split("package:", 1)[1].strip()
    assert package.startswith(str(venv)) and "site-packages" in package  # the installed copy, not the checkout
