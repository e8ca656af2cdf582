"""`us8k page-screenshot [EXPORT] [--output docs/listening_page.png]`: the listening page's picture in
the README, made by a command (the test suite writes no tracked file).

It serves EXPORT (an export directory or a model.tar.gz; without one, the tests' model: an untrained
`tiny` network, seeded with 0, exported into a temporary directory) on a free loopback port with `--threshold`
(default 0.3: the README's picture shows labels and events of the untrained test model), opens the
page in headless Chromium (Debian's /usr/bin/chromium through Playwright, as tests/test_page.py
does; nothing off loopback is loaded), classifies `--audio` (default: an 11 s tone with a swelling
envelope, the file tests/test_page.py classifies), scrolls to the log-mel spectrogram and saves a
full-page PNG. Playwright and Chromium are the test extras (`make install`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

DEFAULT_OUTPUT = "docs/listening_page.png"
DEFAULT_THRESHOLD = 0.3
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 1400}
WAIT_MS = 30_000  # for the page's answer


def example_tone(seconds: float = 11.0, rate: int = 22050, freq: float = 660.0, seed: int = 1) -> np.ndarray:
    """A tone whose loudness swells and fades (0.3 Hz) over a little noise: several windows, events."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


def example_export(target: str | Path) -> Path:
    """The tests' model (tests/conftest.py's tiny_export): untrained `tiny`, seed 0, unit normalisation."""
    import keras

    from models.architectures import build_model
    from models.export import export_model
    from tfdata.contract import FRONTEND

    keras.utils.set_random_seed(0)
    model = build_model("tiny", np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32))
    export_model(model, Path(target))
    return Path(target)


def take_screenshot(model: str | Path, output: str | Path, *, audio: str | Path | None = None,
                    threshold: float = DEFAULT_THRESHOLD, chromium: str = CHROMIUM, browser=None) -> Path:
    """Serve `model`, classify `audio` in the page, save the full page to `output`; returns `output`.
    `browser`: a Playwright (sync) browser to open the page in, else Chromium is launched for it."""
    from playwright.sync_api import sync_playwright

    if browser is not None:
        return _screenshot(browser, model, output, audio, threshold)
    if not Path(chromium).exists():
        raise FileNotFoundError(f"{chromium} is missing: `make install` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, timeout=60_000, args=LAUNCH_ARGS)
        try:
            return _screenshot(launched, model, output, audio, threshold)
        finally:
            launched.close()


def _screenshot(browser, model, output, audio, threshold) -> Path:
    import soundfile as sf
    from playwright.sync_api import expect

    from serving.server import start_server

    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="us8k-screenshot-") as scratch:
        if audio is None:
            audio = Path(scratch) / "long.wav"
            sf.write(audio, example_tone(), 22050, format="WAV", subtype="PCM_16")
        audio = Path(audio)
        with start_server(model, port=0, threshold=threshold) as server:
            context = browser.new_context(viewport=VIEWPORT)
            try:
                context.route(lambda url: not url.startswith(server.url), lambda route: route.abort())
                page = context.new_page()
                page.goto(server.url + "/")
                expect(page.locator("#model-info")).to_contain_text("threshold", timeout=WAIT_MS)
                page.set_input_files("#file-input", str(audio))
                expect(page.locator("#status")).to_contain_text(f"Classified {audio.name}", timeout=WAIT_MS)
                page.locator("#log-mel").scroll_into_view_if_needed()
                output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(output), full_page=True)
            finally:
                context.close()
    return output


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="EXPORT", nargs="?", default=None,
                        help="an export directory or a model.tar.gz to serve (default: the tests' untrained tiny model)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"PNG to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--audio", default=None,
                        help="audio file to classify (default: an 11 s tone, the one tests/test_page.py uses)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"the endpoint's threshold (default {DEFAULT_THRESHOLD:g})")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")


def run(args) -> int:
    if not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("us8k page-screenshot: error: --threshold must be in [0, 1]")
    try:
        with tempfile.TemporaryDirectory(prefix="us8k-screenshot-model-") as scratch:
            model = args.model or example_export(Path(scratch) / "export")
            output = take_screenshot(model, args.output, audio=args.audio, threshold=args.threshold,
                                     chromium=args.chromium)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SystemExit(f"us8k page-screenshot: error: {exc}") from None
    print(f"us8k page-screenshot: wrote {output} ({output.stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0
