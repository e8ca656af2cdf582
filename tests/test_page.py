"""The listening page of `us8k serve` (serving.page, serving/static/) in a real headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright) against a real server on loopback: upload → label
and ten bars, the timeline of a long file, the log-mel features of the model's own `log_mel`
signature, the threshold slider, the endpoint's errors as messages, a two-second recording through
Chromium's fake microphone, a 360 px viewport, axe-core (run in the page) and the keyboard alone; an
export of other classes than UrbanSound8K's, whose names the page lists.
Also the routes themselves over HTTP, and `us8k page-screenshot` (cli.page_screenshot), which makes
docs/listening-page.md's docs/listening_page.png: here it writes into the test's temporary directory only."""
import base64
import io
import json
from pathlib import Path

import endpoint_servers
import numpy as np
import pytest
import soundfile as sf
from endpoint_servers import http  # noqa: F401  (the module's client fixture)
from playwright.sync_api import expect
from trained_run import NEW_CLASSES, new_classes_run  # noqa: F401  (the run of other classes, its export)
from wav_files import duration, encode

from cli.page_screenshot import screenshot_model
from serving import screenshot
from serving.page import LOG_MEL_MAX_WINDOWS
from serving.server import EndpointOptions, start_server
from tfdata.contract import SAMPLE_RATE, UNDETERMINED
from tfdata.contract import URBANSOUND8K_CLASSES as CLASS_NAMES  # the tests' export's classes
from tfdata.layout import (
    LOG_MEL_ROUTE,
    LOG_MEL_SIGNATURE,
    METADATA_ROUTE,
    MODEL_SUBDIR,
    OUTPUT_LOG_MEL,
    VERSION,
    log_mel_inputs,
)

pytestmark = pytest.mark.timeout(120)

CHROMIUM = screenshot.CHROMIUM
LAUNCH_ARGS = screenshot.LAUNCH_ARGS
WAIT_MS = screenshot.WAIT_MS  # for an answer in the page
MICROPHONE_HZ = 300.0  # the tone Chromium's fake microphone plays (microphone.wav)


def tone(seconds, rate=SAMPLE_RATE, freq=440.0, seed=0):
    return screenshot.example_tone(seconds, rate, freq, seed)


def wav(samples, rate=SAMPLE_RATE):
    return encode(samples, rate)


# the tiny model's answers are far from one-hot: labels and events at 0.3
SERVED_THRESHOLD = screenshot.DEFAULT_THRESHOLD

server = endpoint_servers.server_fixture(threshold=SERVED_THRESHOLD)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    paths = {"short.wav": wav(tone(3.0)), "long.wav": wav(tone(11.0, freq=660.0, seed=1)),
             "broken.wav": b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio at all" * 8,
             "microphone.wav": wav(tone(3.0, rate=48000, freq=300.0, seed=2), rate=48000)}
    for name, data in paths.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in paths}


@pytest.fixture(scope="module")
def browser(files):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, timeout=60_000,
            args=LAUNCH_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                                f"--use-file-for-fake-audio-capture={files['microphone.wav']}"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh context (microphone allowed, nothing from off loopback) on the page, /metadata read."""
    context = browser.new_context(viewport={"width": 1000, "height": 1400}, permissions=["microphone"])
    context.route(lambda url: not url.startswith("http://127.0.0.1:"), lambda route: route.abort())  # offline
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server.url + "/")
    wait_text(page, "#model-info", "threshold")
    yield page
    context.close()
    assert problems == [], problems  # no uncaught exception in the page


def wait_text(page, selector, text):
    """Wait for `selector` to contain `text` (locators, not wait_for_function: the page's CSP forbids eval)."""
    expect(page.locator(selector)).to_contain_text(text, timeout=WAIT_MS)


def classify_file(page, path):
    page.set_input_files("#file-input", str(path))
    wait_text(page, "#status", f"Classified {path.name}")


def answer_of(http, data, **params):
    response = http.post("/invocations", content=data, params={"windows": "true", **params},
                         headers={"Content-Type": "audio/wav"})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def top_class(prediction):
    return max(prediction["probabilities"], key=prediction["probabilities"].get)


# ---------------------------------------------------------------- the routes, over HTTP


def test_page_routes_metadata_and_log_mel(http, server, tiny_export):
    import tensorflow as tf

    index = http.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    for name in ("page.js", "page.css"):
        assert http.get(f"/static/{name}").status_code == 200
    assert http.get("/static/nothing.js").status_code == 404

    meta = http.get(METADATA_ROUTE).json()
    assert meta["class_names"] == list(CLASS_NAMES) and meta["threshold"] == server.config.threshold
    assert meta["sample_rate"] == SAMPLE_RATE and meta["log_mel"] is True
    assert meta["log_mel_max_windows"] == LOG_MEL_MAX_WINDOWS

    # one 3 s clip: one window, the signature's own features (8-bit scaled)
    samples = tone(3.0)
    answer = http.post(LOG_MEL_ROUTE, content=wav(samples), headers={"Content-Type": "audio/wav"}).json()
    assert answer["window_count"] == 1 and answer["windows_shown"] == 1 and answer["capped"] is False
    shape = answer["log_mel"]["shape"]
    assert shape[0] == 1 and shape[1:] == [173, 128]
    low, high = answer["log_mel"]["min"], answer["log_mel"]["max"]
    got = np.frombuffer(base64.b64decode(answer["log_mel"]["b64"]), np.uint8).reshape(shape)
    got = low + got.astype(np.float32) * (high - low) / 255
    decoded = sf.read(io.BytesIO(wav(samples)), dtype="float32")[0]
    signature = tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION)).signatures[LOG_MEL_SIGNATURE]
    want = signature(**log_mel_inputs(tf.constant(decoded[None])))[OUTPUT_LOG_MEL].numpy()[0]
    np.testing.assert_allclose(got, want, atol=(high - low) / 255)

    # a long clip (a JSON body, the other parser path): the first LOG_MEL_MAX_WINDOWS windows only
    body = json.dumps({"instances": [{"b64": base64.b64encode(wav(tone(40.0, rate=16000), 16000)).decode()}]})
    long = http.post(LOG_MEL_ROUTE, content=body, headers={"Content-Type": "application/json"}).json()
    assert long["window_count"] == 19 and long["windows_shown"] == LOG_MEL_MAX_WINDOWS and long["capped"] is True
    assert long["log_mel"]["shape"] == [LOG_MEL_MAX_WINDOWS, 173, 128]

    # the same refusals as /invocations, with the same messages
    broken = b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 4
    for content, kind in ((broken, "audio/wav"), (b"{}", "application/json"), (b"x", "text/plain")):
        mel = http.post(LOG_MEL_ROUTE, content=content, headers={"Content-Type": kind})
        inv = http.post("/invocations", content=content, headers={"Content-Type": kind})
        assert mel.status_code == inv.status_code and 400 <= mel.status_code < 500
        assert mel.json() == inv.json()
    two = json.dumps({"instances": [[0.0] * 100, [0.0] * 100]})
    refused = http.post(LOG_MEL_ROUTE, content=two, headers={"Content-Type": "application/json"})
    assert refused.status_code == 400 and "one clip" in refused.json()["error"]
    assert http.get("/ping").status_code == 200  # still serving


# ---------------------------------------------------------------- the page in Chromium


def test_upload_shows_label_bars_timeline_and_slider_relabels(page, http, files):
    classify_file(page, files["long.wav"])
    expected = answer_of(http, files["long.wav"].read_bytes())
    assert page.inner_text("#label") == expected["label"]
    assert page.locator("#bars li").count() == len(CLASS_NAMES)
    assert page.locator("#bars li.top .name").inner_text() == top_class(expected)
    assert page.locator("#bars li").first.locator(".value").inner_text() == \
        f"{100 * expected['probabilities'][CLASS_NAMES[0]]:.1f}%"
    # the timeline: one block per window of the answer, and the answer's segments as events
    assert page.locator("#timeline li").count() == len(expected["windows"]) == 5
    assert page.locator("#segments li").count() == page.locator("#segment-track li").count() \
        == len(expected["segments"]) >= 1
    assert page.input_value("#threshold") == f"{SERVED_THRESHOLD:g}"  # the endpoint's, from /metadata
    # the features the model saw: all 5 windows, not capped
    note = page.inner_text("#log-mel-note")
    assert "5 windows of 4 s" in note and "Only the first" not in note
    assert page.locator("#waveform-note").inner_text().startswith("11.0 s")

    top = expected["confidence"]
    slider = page.locator("#threshold")
    slider.fill(f"{min(1.0, top + 0.01):.2f}")  # just above the top probability
    assert page.inner_text("#label") == UNDETERMINED
    slider.fill("0")
    assert page.inner_text("#label") == top_class(expected)
    page.click("#threshold-reset")
    assert page.inner_text("#label") == expected["label"]
    assert page.input_value("#threshold") == f"{SERVED_THRESHOLD:g}"


def test_the_page_lists_the_served_models_own_classes(browser, files, new_classes_run):  # noqa: F811
    """An export of three classes that are not UrbanSound8K's: the page says so and draws their bars."""
    with endpoint_servers.endpoint(new_classes_run.export, threshold=SERVED_THRESHOLD) as (handle, _):
        context = browser.new_context(viewport={"width": 1000, "height": 1400})
        context.route(lambda url: not url.startswith("http://127.0.0.1:"), lambda route: route.abort())
        page = context.new_page()
        page.goto(handle.url + "/")
        wait_text(page, "#model-info", f"{len(NEW_CLASSES)} classes")
        classify_file(page, files["short.wav"])
        assert page.locator("#bars li .name").all_inner_texts() == list(NEW_CLASSES)
        context.close()


def test_page_screenshot_command_writes_a_png(tiny_export, browser, files, tmp_path):
    """What `us8k page-screenshot` runs (cli.page_screenshot, serving.screenshot; in this test's Chromium),
    into the test's directory: a full-page PNG of the page after classifying the long file (docs/listening-page.md:
    docs/listening_page.png)."""
    output = screenshot_model(tiny_export, tmp_path / "shots" / "page.png", audio=files["long.wav"], browser=browser)
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == screenshot.VIEWPORT["width"] and height >= screenshot.VIEWPORT["height"]  # the full page


def test_endpoint_errors_are_messages(page, files, tiny_export, tmp_path):
    classify_file(page, files["short.wav"])  # a result first: an error must replace it
    page.set_input_files("#file-input", str(files["broken.wav"]))
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    text = error.inner_text()
    assert text.startswith("The endpoint could not use this sound (400): body:"), text
    assert "Traceback" not in text and page.locator("#result").is_hidden()
    # an empty file and a body over the limit: said before sending
    (tmp_path / "empty.wav").write_bytes(b"")
    page.set_input_files("#file-input", str(tmp_path / "empty.wav"))
    wait_text(page, "#error", "is empty")
    (tmp_path / "huge.wav").write_bytes(b"\0" * (7 * 1024 * 1024))
    page.set_input_files("#file-input", str(tmp_path / "huge.wav"))
    wait_text(page, "#error", "at most 6 MiB")
    # too long for an endpoint started with --max-seconds 5
    with start_server(tiny_export, EndpointOptions(max_seconds=5), port=0) as short_server:
        page.goto(short_server.url + "/")
        wait_text(page, "#model-info", "threshold")
        page.set_input_files("#file-input", str(files["long.wav"]))
        error.wait_for(state="visible", timeout=WAIT_MS)
        assert "11.0 s of audio" in error.inner_text() and "limit is 5 s" in error.inner_text()
    # an endpoint that wants a token: the page says so
    with start_server(tiny_export, EndpointOptions(auth_token="t" * 24), port=0) as locked:
        page.goto(locked.url + "/")
        wait_text(page, "#error", "needs a token")
    # the endpoint gone: a message too, not a blank page
    page.set_input_files("#file-input", str(files["short.wav"]))
    wait_text(page, "#error", "Cannot reach the endpoint")


def record(page, seconds):
    """Press record, wait until the page's own timer shows `seconds`, press stop; the request the page
    then posts to /invocations. (Waits on the page, not on the test's clock.)"""
    page.click("#record-button")
    expect(page.locator("#record-button")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(page.locator("#record-time")).to_contain_text(f"{seconds} s of", timeout=WAIT_MS)
    with page.expect_request(lambda r: r.method == "POST" and "/invocations" in r.url, timeout=WAIT_MS) as sent:
        page.click("#record-button")
    wait_text(page, "#status", "Classified a ")
    return sent.value


def test_record_from_fake_microphone(page, http):
    """The page records Chromium's fake microphone (a 300 Hz tone) into a 16-bit WAV, says how long it
    is, sends it, and shows the endpoint's answer for exactly those bytes."""
    request = record(page, 2)
    body = request.post_data_buffer
    assert request.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(body), dtype="float32")
    assert samples.ndim == 1 and samples.size > 0  # mono, not empty
    shown = page.inner_text("#source-name")  # "for a 2.1 s recording"
    assert shown.startswith("for a ") and shown.endswith(" s recording")
    assert float(shown.split()[2]) == pytest.approx(duration(body), abs=0.05)  # the length it says it sent
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    assert np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()] == pytest.approx(MICROPHONE_HZ, rel=0.05)
    expected = answer_of(http, body)  # the page shows the endpoint's answer for those bytes
    assert page.inner_text("#label") == expected["label"]
    assert page.locator("#bars li.top .name").inner_text() == top_class(expected)
    assert page.locator("#bars li").count() == len(CLASS_NAMES)
    drawn = page.evaluate("""() => {  // the waveform's columns with ink: the fake microphone's tone, not silence
        const canvas = document.getElementById('waveform');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
        return inked / (canvas.width * canvas.height);
    }""")
    assert drawn > 0.05, drawn
    assert page.locator("#error").is_hidden()


def test_narrow_viewport_360(page, files, tmp_path):
    page.set_viewport_size({"width": 360, "height": 780})
    classify_file(page, files["long.wav"])
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing sticks out sideways
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
    assert page.locator("#bars li").count() == len(CLASS_NAMES)
    for selector in ("#label", "#threshold", "#bars", "#waveform", "#timeline", "#log-mel"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
    page.locator("#threshold").fill("1")
    assert page.inner_text("#label") == UNDETERMINED
    record(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def axe_violations(page):
    import axe_playwright_python

    source = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
    page.evaluate(source)  # not a <script>: the page's CSP allows none but its own
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    passed = {rule["id"] for rule in result["passes"]}
    assert {"color-contrast", "label", "button-name"} <= passed, passed  # it checked what matters here
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_accessibility_and_keyboard_only(page, files):
    # Playwright turns on file-chooser interception asynchronously when a listener is added: add one
    # now, well before the key press (else, on a loaded machine, the chooser could open uncaught).
    page.on("filechooser", lambda chooser: None)
    assert axe_violations(page) == []  # before anything: the controls, the status
    # keyboard alone: Tab to the file input, open it, pick a file
    focused = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
        if focused[-1] == "file-input":
            break
    assert focused[-1] == "file-input", focused
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"  # visible focus
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(str(files["long.wav"]))
    wait_text(page, "#status", "Classified long.wav")
    # Tab on to the record button, then the slider: End → 1 → undetermined; the reset button puts it back
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "record-button"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "threshold"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    label = page.inner_text("#label")
    page.keyboard.press("End")
    assert page.inner_text("#label") == UNDETERMINED
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "threshold-reset"
    page.keyboard.press("Enter")
    assert page.inner_text("#label") == label
    # the record button by keyboard: Space starts, Space stops and classifies
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "record-button"
    page.keyboard.press("Space")
    expect(page.locator("#record-button")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(page.locator("#record-time")).to_contain_text("1 s of", timeout=WAIT_MS)
    page.keyboard.press("Space")
    wait_text(page, "#status", "Classified a ")
    assert axe_violations(page) == []  # with the whole result shown
    page.set_input_files("#file-input", str(files["broken.wav"]))
    page.locator("#error").wait_for(state="visible", timeout=WAIT_MS)
    assert axe_violations(page) == []  # with an error shown

