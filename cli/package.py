"""`us8k package EXPORT [--output model.tar.gz] [--python-version 3.12] [--wheel-dir DIR]`: an export as a
self-contained SageMaker model.tar.gz (serving.package), with one line on what the archive holds."""
from __future__ import annotations

import subprocess
import tarfile

from cli import CommandError
from cli.output import progress


def add_arguments(parser) -> None:
    from serving.package import CONTAINER_PYTHON, default_wheel_dir

    parser.add_argument("export", metavar="EXPORT", help="export directory (EXPORT/model/1/ + metadata.json)")
    parser.add_argument("--output", default="model.tar.gz", help="archive to write (default model.tar.gz)")
    parser.add_argument("--python-version", default=CONTAINER_PYTHON,
                        help=f"CPython the container runs, for the vendored wheels (default {CONTAINER_PYTHON}: "
                             "the SageMaker TF Serving 2.19 image)")
    parser.add_argument("--wheel-dir", default=None,
                        help=f"wheel cache (default {default_wheel_dir()}); reused without the network when it "
                             "holds the wheels")


def run(args) -> int:
    from serving.package import LIB_DIR, PackageError, write_package
    from tfdata.layout import METADATA_FILE, SAVED_MODEL_FILE

    log = progress("package")
    log(f"packaging {args.export} for CPython {args.python_version} (manylinux x86_64)")
    try:
        output = write_package(args.export, args.output, python_version=args.python_version,
                               wheel_dir=args.wheel_dir, log=log)
    except (PackageError, OSError, subprocess.SubprocessError) as exc:
        raise CommandError(str(exc)) from None
    with tarfile.open(output, "r:gz") as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    version = next(name.split("/")[0] for name in names if name.endswith(f"/{SAVED_MODEL_FILE}"))
    size_mb = output.stat().st_size / 1e6
    log(f"wrote {output} ({size_mb:.1f} MB, {len(names)} files: {version}/ SavedModel, "
        f"code/inference.py, {LIB_DIR}/ (tfdata + vendored wheels), {METADATA_FILE})")
    return 0
