"""An export in the SageMaker TF Serving layout, self-contained: `write_package` (`us8k package`, whose
command line is cli/package.py).

At the archive's root, as the SageMaker TensorFlow Serving container expects:

    1/                      the SavedModel (from EXPORT/model/1/; TF Serving's version folder)
    code/inference.py       the request/response handlers (serving/inference.py)
    code/lib/tfdata/        the tfdata modules inference.py imports, directly or not (contract, audio,
                            layout, pcm, windowing…; found by reading the imports): numpy only
    code/lib/…              numpy, soundfile (+ libsndfile), soxr and what they need (cffi, pycparser,
                            typing_extensions), unpacked from binary wheels for the container's Python
    metadata.json           class names, threshold, window hop… (read by inference.py)

The container runs inference.py with code/ and code/lib/ on PYTHONPATH. It pip-installs a
code/requirements.txt only when there is no code/lib/ (and its Python 3.12 has no numpy), so the
archive carries no requirements.txt: everything the handler imports is in code/lib/. The wheels
are fetched with `pip download --only-binary=:all:` for the target (default CPython 3.12, manylinux
x86_64: the TF Serving 2.19 image `us8k deploy` selects; `--python-version` for another), at the
versions installed here (setup.py / constraints.txt), and cached in --wheel-dir: a rebuild first
tries that cache alone (`--no-index`), so it works offline. Each wheel's dependencies (its
Requires-Dist, markers evaluated for the target) must be in the set, or packaging stops. Unpacked
as they are, minus their test suites, type stubs and RECORD files (hashes of what is left out);
licences stay in each *.dist-info/. PyAV (FFmpeg, ≈ 70 MB) is left out: the container decodes what
libsndfile reads and answers 415 for the rest.

Entries are relative, sorted, with fixed owner/mode/mtime (the same export and wheels give the same
bytes); symbolic links are refused rather than followed.
"""
from __future__ import annotations

import ast
import email.parser
import gzip
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

import serving.inference
import tfdata
from tfdata.layout import METADATA_FILE, MODEL_SUBDIR, latest_version_dir, read_json_in

CODE_DIR = "code"
LIB_DIR = f"{CODE_DIR}/lib"
HANDLER_PACKAGE = "tfdata"  # our package the handler imports from; each module it reaches ships in code/lib/
REFUSED_IMPORTS = ("tensorflow", "keras", "models", "serving", "beam")  # not in the container
VENDORED = ("numpy", "soundfile", "soxr")  # what inference.py and tfdata import; their dependencies follow
CONTAINER_PYTHON = "3.12"  # the SageMaker TF Serving 2.19 image's Python (Dockerfile.cpu builds 3.12.10)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")  # ubuntu 22.04, glibc 2.35
ARCHIVE_MTIME = 0  # fixed timestamps: reproducible archives
COMPRESS_LEVEL = 6  # as small as 9 within 1 % on these files, 3× faster
PIP_TIMEOUT_S = 600


class PackageError(ValueError):
    """The export cannot be packaged; the message says why."""


def default_wheel_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "us8k" / "wheels"


# ---------------------------------------------------------------------------- wheels for the target
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_pins() -> dict[str, str]:
    """{canonical name: version} of every distribution installed here (what constraints.txt pins)."""
    return {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
            if d.metadata["Name"]}


def check_python_version(python_version: str) -> tuple[int, int]:
    match = re.fullmatch(r"3\.(\d{1,2})", python_version)
    if not match:
        raise PackageError(f"--python-version must look like 3.12, got {python_version!r}")
    return 3, int(match.group(1))


def target_environment(python_version: str) -> dict[str, str]:
    """Marker values of CPython `python_version` on manylinux x86_64 (for Requires-Dist markers)."""
    return {"implementation_name": "cpython", "platform_python_implementation": "CPython",
            "python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_version": f"{python_version}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": ""}


def target_tags(python_version: str) -> set:
    version = check_python_version(python_version)
    interpreter = f"cp{version[0]}{version[1]}"
    return set(tags.cpython_tags(version, abis=[interpreter], platforms=PLATFORMS)) | \
        set(tags.compatible_tags(version, interpreter=interpreter, platforms=PLATFORMS))


def pip_download_command(python_version: str, wheel_dir: Path, constraints: Path, requirements: list[str],
                         offline: bool) -> list[str]:
    major, minor = check_python_version(python_version)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
               "--abi", f"cp{major}{minor}"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += ["--dest", str(wheel_dir), "--find-links", str(wheel_dir), "--constraint", str(constraints)]
    return command + (["--no-index"] if offline else []) + requirements


def fetch_wheels(python_version: str = CONTAINER_PYTHON, wheel_dir: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> list[Path]:
    """The binary wheels of VENDORED and their dependencies for the target, pinned to the versions
    installed here: from `wheel_dir` alone when it holds them, else downloaded into it by pip."""
    log = log or (lambda message: None)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else default_wheel_dir()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pins = installed_pins()
    missing = [name for name in VENDORED if _canonical(name) not in pins]
    if missing:
        raise PackageError(f"{', '.join(missing)} not installed here: nothing to pin the vendored versions to")
    requirements = [f"{name}=={pins[_canonical(name)]}" for name in VENDORED]
    with tempfile.TemporaryDirectory(prefix="us8k-package-") as scratch:
        constraints = Path(scratch) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        cached = subprocess.run(pip_download_command(python_version, wheel_dir, constraints, requirements, True),
                                capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if cached.returncode == 0:
            log(f"wheels for CPython {python_version} found in {wheel_dir} (no download)")
        else:
            log(f"downloading wheels for CPython {python_version} (manylinux x86_64) into {wheel_dir}")
            fetched = subprocess.run(pip_download_command(python_version, wheel_dir, constraints, requirements, False),
                                     capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            if fetched.returncode != 0:
                lines = [line.strip() for line in (fetched.stderr + fetched.stdout).splitlines()
                         if line.strip() and not line.lstrip().startswith("WARNING")]
                reason = lines[-1] if lines else f"exit status {fetched.returncode}"
                raise PackageError(f"pip could not fetch wheels of {' '.join(requirements)} for CPython "
                                   f"{python_version}: {reason}")
    return wheel_closure(python_version, wheel_dir, pins)


def wheel_closure(python_version: str, wheel_dir: Path, pins: dict[str, str]) -> list[Path]:
    """VENDORED and, through their Requires-Dist (markers for the target), every dependency: one
    wheel each, at its pinned version, whose tags the target accepts."""
    accepted = target_tags(python_version)
    environment = target_environment(python_version)
    available: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(wheel_dir.glob("*.whl")):
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        if wheel_tags & accepted:
            available.setdefault((_canonical(name), str(version)), []).append(path)
    chosen: dict[str, Path] = {}
    pending = [(_canonical(name), "the handler") for name in VENDORED]
    while pending:
        name, needed_by = pending.pop(0)
        if name in chosen:
            continue
        if name not in pins:
            raise PackageError(f"{name} (needed by {needed_by} on CPython {python_version}) is not installed "
                               f"here, so it has no pinned version: add it to constraints.txt")
        candidates = available.get((name, pins[name]))
        if not candidates:
            raise PackageError(f"no wheel of {name}=={pins[name]} for CPython {python_version} in {wheel_dir}")
        chosen[name] = candidates[0]
        for line in _wheel_metadata(candidates[0]).get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append((_canonical(requirement.name), name))
    return [chosen[name] for name in sorted(chosen)]


def _wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as wheel:
        names = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise PackageError(f"{path.name}: expected one *.dist-info/METADATA, found {len(names)}")
        return email.parser.BytesParser().parsebytes(wheel.read(names[0]))


def _vendored_name(member: str) -> str | None:
    """Where a wheel member goes under code/lib/ (None: left out). *.data/purelib|platlib/ are
    unpacked at the root like the rest; scripts, headers, data, test suites, stubs and RECORD are not."""
    parts = member.split("/")
    if parts[0].endswith(".data"):
        if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
            return None
        parts = parts[2:]
    if parts[0].endswith(".dist-info"):
        return None if parts[-1] == "RECORD" else "/".join(parts)
    if "tests" in parts[1:-1] or parts[-1].endswith(".pyi"):
        return None
    return "/".join(parts)


def unpack_wheels(wheels: list[Path]) -> list[tuple[str, bytes]]:
    """(archive name under code/lib/, content) for every file the wheels install."""
    members: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for path in wheels:
        with zipfile.ZipFile(path) as wheel:
            for info in wheel.infolist():
                if info.is_dir():
                    continue
                name = _vendored_name(info.filename)
                if name is None:
                    continue
                target = f"{LIB_DIR}/{name}"
                if target in members:
                    raise PackageError(f"{path.name} and {members[target]} both install {name}")
                members[target] = path.name
                files.append((target, wheel.read(info)))
    return files


# ---------------------------------------------------------------------------- our modules
def _imported_modules(path: Path) -> set[str]:
    """Every module name `path` imports (absolute imports; `from pkg import name` also names pkg.name)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def handler_modules(handler: Path | None = None) -> list[str]:
    """The tfdata module files (names under tfdata/) that the handler imports, directly or through
    each other, plus the package's __init__.py; refused when one imports TensorFlow or our other packages."""
    package_dir = Path(tfdata.__file__).parent
    handler = handler or Path(serving.inference.__file__)
    found, pending = {"__init__.py"}, [handler]
    while pending:
        source = pending.pop()
        for name in sorted(_imported_modules(source)):
            if name.split(".")[0] in REFUSED_IMPORTS:
                raise PackageError(f"{source.name} imports {name}, which the SageMaker container does not have")
            parts = name.split(".")
            if parts[0] == HANDLER_PACKAGE and len(parts) == 2 and (package_dir / f"{parts[1]}.py").is_file():
                if f"{parts[1]}.py" not in found:
                    found.add(f"{parts[1]}.py")
                    pending.append(package_dir / f"{parts[1]}.py")
    return sorted(found)


# ---------------------------------------------------------------------------- the archive
def archive_members(export_dir: str | Path, wheels: list[Path] | None = None) -> list[tuple[str, Path | bytes]]:
    """(archive name, source file or content) for every file, in archive order."""
    export_dir = Path(export_dir)
    read_json_in(export_dir, METADATA_FILE, PackageError, kind="export")  # present and valid, else refused
    version_dir = latest_version_dir(export_dir / MODEL_SUBDIR)
    if version_dir is None:
        raise PackageError(f"no SavedModel in {export_dir / MODEL_SUBDIR}/<version>/ "
                           f"(is {export_dir} an `us8k export` output?)")
    members: list[tuple[str, Path | bytes]] = []
    for path in sorted(version_dir.rglob("*")):
        if path.is_symlink():
            raise PackageError(f"refusing to package a symbolic link: {path}")
        if path.is_file():
            members.append((f"{version_dir.name}/{path.relative_to(version_dir).as_posix()}", path))
    members.append((f"{CODE_DIR}/inference.py", Path(serving.inference.__file__)))
    tfdata_dir = Path(tfdata.__file__).parent
    for module in handler_modules():
        members.append((f"{LIB_DIR}/{HANDLER_PACKAGE}/{module}", tfdata_dir / module))
    members.extend(unpack_wheels(wheels or []))
    members.append((METADATA_FILE, export_dir / METADATA_FILE))
    names = [name for name, _ in members]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise PackageError(f"a vendored wheel overwrites one of our files: {twice}")
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts:
            raise PackageError(f"unsafe archive name {name!r}")
    return sorted(members, key=lambda member: member[0])


def write_package(export_dir: str | Path, output: str | Path, *, python_version: str = CONTAINER_PYTHON,
                  wheel_dir: str | Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Write model.tar.gz for CPython `python_version` (atomically: a temp file beside it, then renamed)."""
    archive_members(export_dir)  # refuse a bad export before fetching anything
    wheels = fetch_wheels(python_version, wheel_dir, log)
    if log:
        log("vendoring " + ", ".join(p.name.split("-")[0] + " " + p.name.split("-")[1] for p in wheels)
            + f" into {LIB_DIR}/")
    members = archive_members(export_dir, wheels)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=ARCHIVE_MTIME,
                              compresslevel=COMPRESS_LEVEL) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for directory in _directories(name for name, _ in members):
                archive.addfile(_info(directory, tarfile.DIRTYPE, 0, 0o755))
            for name, source in members:
                data = source if isinstance(source, bytes) else source.read_bytes()
                archive.addfile(_info(name, tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def _directories(names) -> list[str]:
    found = set()
    for name in names:
        parts = name.split("/")[:-1]
        found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(found)


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
