"""The listening page's picture: `take_screenshot(url, …)` opens the page of an endpoint that is
serving (serving.server) in headless Chromium (Debian's /usr/bin/chromium through Playwright, as
tests/test_page.py does; nothing off that endpoint is loaded), classifies an audio file (default:
`example_tone`, an 11 s tone with a swelling envelope, the file tests/test_page.py classifies),
scrolls to the log-mel spectrogram and saves a full-page PNG. `us8k page-screenshot`
(cli/page_screenshot.py) serves the model at DEFAULT_THRESHOLD for it. Playwright and Chromium are
the test extras (`make install`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

DEFAULT_THRESHOLD = 0.3  # the docs' picture shows labels and events of the untrained test model
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


def require_chromium(chromium: str = CHROMIUM) -> None:
    if not Path(chromium).exists():
        raise FileNotFoundError(f"{chromium} is missing: `make install` installs Debian's chromium")


def take_screenshot(url: str, output: str | Path, *, audio: str | Path | None = None, chromium: str = CHROMIUM,
                    browser=None) -> Path:
    """Open the page of the endpoint at `url`, classify `audio` in it, save the full page to `output`;
    returns `output`. `browser`: a Playwright (sync) browser to open the page in, else Chromium is
    launched for it."""
    from playwright.sync_api import sync_playwright  # the test extra, for this one picture

    if browser is not None:
        return _screenshot(browser, url, output, audio)
    require_chromium(chromium)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, timeout=60_000, args=LAUNCH_ARGS)
        try:
            return _screenshot(launched, url, output, audio)
        finally:
            launched.close()


def _screenshot(browser, url: str, output: str | Path, audio: str | Path | None) -> Path:
    from playwright.sync_api import expect  # the test extra, for this one picture

    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="us8k-screenshot-") as scratch:
        if audio is None:
            audio = Path(scratch) / "long.wav"
            sf.write(audio, example_tone(), 22050, format="WAV", subtype="PCM_16")
        audio = Path(audio)
        context = browser.new_context(viewport=VIEWPORT)
        try:
            context.route(lambda address: not address.startswith(url), lambda route: route.abort())
            page = context.new_page()
            page.goto(url + "/")
            expect(page.locator("#model-info")).to_contain_text("threshold", timeout=WAIT_MS)
            page.set_input_files("#file-input", str(audio))
            expect(page.locator("#status")).to_contain_text(f"Classified {audio.name}", timeout=WAIT_MS)
            page.locator("#log-mel").scroll_into_view_if_needed()
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
        finally:
            context.close()
    return output
