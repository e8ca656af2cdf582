"""`us8k page-screenshot [EXPORT] [--output docs/listening_page.png]`: the listening page's picture in
docs/listening-page.md, made by a command (the test suite writes no tracked file).

It serves EXPORT (an export directory or a model.tar.gz; without one, `example_export`: the tests'
model, an untrained `tiny` network seeded with 0, exported into a temporary directory) on a free
loopback port with `--threshold` (serving.server), classifies `--audio` in the page and saves a
full-page PNG (serving.screenshot). The example model lives here, above serving, because building
it needs models/.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from cli import CommandError
from cli.output import progress

DEFAULT_OUTPUT = "docs/listening_page.png"


def example_export(target: str | Path) -> Path:
    """The tests' model (tests/conftest.py's tiny_export): untrained `tiny`, seed 0, unit normalisation."""
    import keras
    import numpy as np

    from models.architectures import build_model
    from models.export import export_model
    from tfdata.contract import FRONTEND, URBANSOUND8K_CLASSES

    keras.utils.set_random_seed(0)
    model = build_model("tiny", np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32),
                        num_classes=len(URBANSOUND8K_CLASSES))
    export_model(model, Path(target), class_names=URBANSOUND8K_CLASSES)
    return Path(target)


def screenshot_model(model: str | Path, output: str | Path, *, audio: str | Path | None = None,
                     threshold: float | None = None, chromium: str | None = None, browser=None) -> Path:
    """Serve `model` on a free loopback port and picture its page (serving.screenshot.take_screenshot);
    `threshold` and `chromium` default to serving.screenshot's."""
    from serving.screenshot import CHROMIUM, DEFAULT_THRESHOLD, require_chromium, take_screenshot
    from serving.server import EndpointOptions, start_server

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    chromium = chromium or CHROMIUM
    if browser is None:
        require_chromium(chromium)  # before loading the model
    with start_server(model, EndpointOptions(threshold=threshold), port=0) as server:
        return take_screenshot(server.url, output, audio=audio, chromium=chromium, browser=browser)


def add_arguments(parser) -> None:
    from serving.screenshot import CHROMIUM, DEFAULT_THRESHOLD

    parser.add_argument("model", metavar="EXPORT", nargs="?", default=None,
                        help="an export directory or a model.tar.gz to serve "
                             "(default: the tests' untrained tiny model)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"PNG to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--audio", default=None,
                        help="audio file to classify (default: an 11 s tone, the one tests/test_page.py uses)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"the endpoint's threshold (default {DEFAULT_THRESHOLD:g})")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")


def run(args) -> int:
    if not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold must be in [0, 1]")
    try:
        with tempfile.TemporaryDirectory(prefix="us8k-screenshot-model-") as scratch:
            model = args.model or example_export(Path(scratch) / "export")
            output = screenshot_model(model, args.output, audio=args.audio, threshold=args.threshold,
                                      chromium=args.chromium)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    progress("page-screenshot")(f"wrote {output} ({output.stat().st_size / 1e3:.0f} kB)")
    return 0
