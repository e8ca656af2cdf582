"""serving.inference: request parsing, options, answers, and the SageMaker handlers called the way
the TF Serving container calls them (input_handler → the SavedModel on that JSON → output_handler)."""
import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tf_serving_rest
from container_context import context
from wav_files import encode

from serving import inference
from serving.inference import (
    MAX_BODY_BYTES,
    RequestError,
    RequestOptions,
    ServingConfig,
    load_config,
    parse_options,
    parse_request,
    predictions_from_outputs,
)
from tfdata.audio import decode_audio, prepare_waveform
from tfdata.batching import pad_batch
from tfdata.contract import DEFAULT_THRESHOLD, SAMPLE_RATE, UNDETERMINED, URBANSOUND8K_CLASSES
from tfdata.layout import METADATA_FILE, MODEL_SUBDIR, OUTPUT_PROBABILITIES, SERVING_SIGNATURE, VERSION, serving_inputs

pytestmark = pytest.mark.timeout(180)

def tone(seconds, rate=SAMPLE_RATE, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(int(freq)).standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


def body(obj):
    return json.dumps(obj).encode()


# ------------------------------------------------------------------ parsing


def test_imports_no_tensorflow():
    code = "import sys, serving.inference; assert 'tensorflow' not in sys.modules, 'TF imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_json_rows_of_mixed_lengths_are_kept_exactly():
    rows = [tone(0.5), tone(4.0, freq=880), tone(9.0, freq=220)]
    waveforms = parse_request(body({"instances": [r.tolist() for r in rows]}), "application/json")
    assert [w.shape for w in waveforms] == [r.shape for r in rows]
    for w, r in zip(waveforms, rows):
        assert w.dtype == np.float32 and np.array_equal(w, r)
    batch, lengths = pad_batch(waveforms)
    assert batch.shape == (3, rows[2].size) and lengths.tolist() == [r.size for r in rows]
    assert not batch[0, rows[0].size:].any()


def test_json_sample_rate_resamples_like_ingestion():
    row = tone(1.5, rate=16000)
    (waveform,) = parse_request(body({"instances": [row.tolist()], "sample_rate": 16000}), "application/json")
    expected = prepare_waveform(row, 16000)
    assert abs(waveform.size - int(1.5 * SAMPLE_RATE)) <= 1
    np.testing.assert_array_equal(waveform, expected)


def test_b64_instances_decode_like_files_and_mix_with_rows():
    flac = encode(tone(2.0, rate=44100, channels=2), 44100, "FLAC")
    row = tone(1.0)
    waveforms = parse_request(body({"instances": [{"b64": base64.b64encode(flac).decode()}, row.tolist()]}),
                              "application/json; charset=utf-8")
    np.testing.assert_array_equal(waveforms[0], decode_audio(flac))
    np.testing.assert_array_equal(waveforms[1], row)


@pytest.mark.parametrize("content_type,fmt,subtype", [
    ("audio/wav", "WAV", "PCM_24"), ("audio/x-wav", "WAV", "FLOAT"), ("audio/flac", "FLAC", "PCM_16"),
    ("audio/ogg", "OGG", "VORBIS"), ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    ("application/octet-stream", "WAV", "PCM_16"), ("Audio/WAV; rate=48000", "WAV", "PCM_16")])
def test_audio_bodies_decode_to_22050_mono(content_type, fmt, subtype):
    data = encode(tone(3.0, rate=48000, channels=2), 48000, fmt, subtype)
    (waveform,) = parse_request(data, content_type)
    np.testing.assert_array_equal(waveform, decode_audio(data))
    assert abs(waveform.size - 3 * SAMPLE_RATE) < 0.05 * SAMPLE_RATE


def too_long_wav():
    return encode(np.zeros(601 * 1000, np.float32), 1000, "WAV", "PCM_U8")


BAD_REQUESTS = [
    (b"", "audio/wav", 400, "empty input"),
    (b"this is not audio at all", "audio/wav", 400, "not decodable audio"),
    (b"{", "application/json", 400, "not valid JSON"),
    (b"\xff\xfe\x00", "application/json", 400, "not valid JSON"),
    (b'{"inputs": [[0.1]]}', "application/json", 400, '"instances"'),
    (b'[[0.1, 0.2]]', "application/json", 400, '"instances"'),
    (b'{"instances": []}', "application/json", 400, "non-empty list"),
    (b'{"instances": [[]]}', "application/json", 400, "instance 0: empty waveform"),
    (b'{"instances": [[0.1], [0.1, NaN]]}', "application/json", 400, "instance 1: samples contain NaN"),
    (b'{"instances": [[0.1, Infinity]]}', "application/json", 400, "NaN, Inf"),
    (b'{"instances": [[0.1, null]]}', "application/json", 400, "instance 0: samples must all be numbers, found null"),
    (b'{"instances": [[[0.1, 0.2], [0.3, 0.4]]]}', "application/json", 400, "flat list"),
    (b'{"instances": [[0.1, [0.2]]]}', "application/json", 400, "numbers"),
    (b'{"instances": [["a", "b"]]}', "application/json", 400, "numbers"),
    (b'{"instances": [0.1, 0.2]}', "application/json", 400, "instance 0: expected a list"),
    (b'{"instances": [{"b64": "!!!not base64"}]}', "application/json", 400, "invalid base64"),
    (b'{"instances": [{"b64": "aGVsbG8gd29ybGQ="}]}', "application/json", 400, "not decodable audio"),
    (b'{"instances": [{"audio": "x"}]}', "application/json", 400, '{"b64"'),
    (b'{"instances": [[0.1]], "sample_rate": 0}', "application/json", 400, "sample_rate"),
    (b'{"instances": [[0.1]], "sample_rate": "16k"}', "application/json", 400, "sample_rate"),
    (b'{"instances": [[0.1]], "sample_rate": 16000.5}', "application/json", 400, "sample_rate"),
    (body({"instances": [[0.0]] * 65}), "application/json", 400, "limit is 64"),
    (too_long_wav(), "audio/wav", 400, "601.0 s of audio, over the limit (the limit is 600 s per request)"),
    (b"x" * (MAX_BODY_BYTES + 1), "audio/wav", 413, "limit is 6291456 bytes"),
    (b"hello", "text/plain", 415, "unsupported content type 'text/plain'"),
    (b"\x89PNG", "image/png", 415, "unsupported content type"),
]


@pytest.mark.parametrize("data,content_type,status,message", BAD_REQUESTS,
                         ids=[f"{i}-{r[3][:20]}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_requests_raise_with_status_and_reason(data, content_type, status, message):
    with pytest.raises(RequestError) as caught:
        parse_request(data, content_type)
    assert caught.value.status == status
    assert message in caught.value.message
    assert json.loads(caught.value.to_json()) == {"error": caught.value.message}


def test_total_duration_limit():
    """The limit is per request (all rows together), from what each row declares: files and rows mix."""
    ninety = {"b64": base64.b64encode(encode(np.zeros(90 * 1000, np.float32), 1000, "WAV", "PCM_U8")).decode()}
    assert len(parse_request(body({"instances": [ninety] * 6}), "application/json")) == 6  # 540 s
    with pytest.raises(RequestError, match="instance 6: 90.0 s of audio, over the 60.0 s the request has left"):
        parse_request(body({"instances": [ninety] * 7}), "application/json")  # 630 s
    row = [0.0] * 61_000  # 61 s at 1 kHz, refused with the files before any of them is decoded
    with pytest.raises(RequestError, match="request holds 601.0 s of audio; the limit is 600 s"):
        parse_request(body({"instances": [row] * 9 + [row[:1000]] * 52, "sample_rate": 1000}), "application/json")
    with pytest.raises(RequestError, match="instance 0: .* over the 59.0 s the request has left") as caught:
        parse_request(body({"instances": [ninety, [0.0] * 541_000], "sample_rate": 1000}), "application/json")
    assert caught.value.reason == "too_long"
    assert len(parse_request(body({"instances": [ninety]}), "application/json", max_seconds=90)) == 1
    with pytest.raises(RequestError, match="the limit is 89 s"):
        parse_request(body({"instances": [ninety]}), "application/json", max_seconds=89)


def test_missing_content_type_is_json_as_in_the_container():
    assert len(parse_request(body({"instances": [[0.1, 0.2]]}), None)) == 1


# ------------------------------------------------------------------ options and answers


def test_options_from_custom_attributes_and_query():
    assert parse_options(None) == RequestOptions(None, False)
    assert parse_options("tfs-model-name=m, threshold=0.7 ,windows=true") == RequestOptions(0.7, True)
    assert parse_options("threshold=0.7;windows=1") == RequestOptions(0.7, True)
    assert parse_options("threshold=0.2", {"threshold": "0.9"}) == RequestOptions(0.9, False)
    assert parse_options(None, {"windows": "no"}) == RequestOptions(None, False)
    for bad in ("threshold=high", "threshold=1.5", "threshold=-0.1", "threshold=nan", "windows=maybe"):
        with pytest.raises(RequestError) as caught:
            parse_options(bad)
        assert caught.value.status == 400


def test_predictions_threshold_windows_and_rounding():
    config = ServingConfig(URBANSOUND8K_CLASSES, 0.6, 2.0)
    probabilities = np.zeros((2, 10), np.float32)
    probabilities[0, 3], probabilities[0, 1] = 0.7, 0.3
    probabilities[1, 8], probabilities[1, 0] = 0.55, 0.45
    windows = np.zeros((2, 3, 10), np.float32)
    windows[0, 0, 3] = 1.0
    windows[1, :, 8], windows[1, :, 0] = [0.6, 0.55, 0.65], [0.4, 0.45, 0.35]
    count = np.array([1, 3], np.int32)
    first, second = predictions_from_outputs(probabilities, windows, count, config=config)
    assert first == {"label": "dog_bark", "confidence": 0.7, "undetermined": False,
                     "probabilities": dict(zip(URBANSOUND8K_CLASSES,
                                               np.round(probabilities[0].astype(float), 6).tolist()))}
    assert second["label"] == UNDETERMINED and second["undetermined"] and second["confidence"] == 0.55
    assert "windows" not in first
    lowered = predictions_from_outputs(probabilities, windows, count, config=config,
                                       options=RequestOptions(threshold=0.5, windows=True))
    assert lowered[1]["label"] == "siren" and not lowered[1]["undetermined"]
    assert [w["start_s"] for w in lowered[0]["windows"]] == [0.0]
    assert [w["start_s"] for w in lowered[1]["windows"]] == [0.0, 2.0, 4.0]
    assert [w["label"] for w in lowered[1]["windows"]] == ["siren", "siren", "siren"]
    assert lowered[1]["windows"][2]["confidence"] == 0.65
    json.dumps(lowered)  # plain Python types only


def test_load_config_from_metadata(tmp_path):
    meta = tmp_path / METADATA_FILE
    meta.write_text(json.dumps({"sample_rate": SAMPLE_RATE, "threshold": 0.42, "window_hop_samples": 22050,
                                "class_names": list(URBANSOUND8K_CLASSES)}))
    assert load_config(meta) == ServingConfig(URBANSOUND8K_CLASSES, 0.42, 1.0)
    assert load_config(meta, threshold=0.8).threshold == 0.8
    meta.write_text(json.dumps({"class_names": ["bell", "hum", "chirp"], "num_classes": 3}))  # any export's list
    assert load_config(meta) == ServingConfig(("bell", "hum", "chirp"), DEFAULT_THRESHOLD, 2.0)
    meta.write_text(json.dumps({"sample_rate": 16000, "class_names": ["bell", "hum"]}))
    with pytest.raises(ValueError, match="16000 Hz"):
        load_config(meta)


def test_metadata_without_class_names_is_refused_in_one_line(tmp_path, monkeypatch):
    """Every export has written class_names since the first one: metadata without them is no export of ours.
    The container refuses it when it loads the handler, and keeps no earlier configuration."""
    meta = tmp_path / METADATA_FILE
    meta.write_text(json.dumps({"threshold": 0.5}))
    monkeypatch.setenv(inference.METADATA_ENV, str(meta))
    monkeypatch.delenv(inference.THRESHOLD_ENV, raising=False)
    with pytest.raises(ValueError, match=r"metadata.json: the model's metadata.json lacks class_names"):
        inference.reload_container_config()
    with pytest.raises(ValueError, match="lacks class_names"):  # not an earlier model's classes
        inference.container_config()
    monkeypatch.undo()
    inference.forget_container_config()
    with pytest.raises(ValueError, match=r"^no metadata.json: the model's class names are unknown"):
        load_config(None)
    with pytest.raises(ValueError, match=r"^no metadata.json at .*missing.json: the model's class names are unknown"):
        load_config(tmp_path / "missing.json")
    for content, problem in (({"threshold": 0.5}, "lacks class_names"),
                             ({"class_names": ["bell"]}, "1 class(es): a class list has 2 to 1000"),
                             ({"class_names": ["bell", "BELL"]}, "listed twice"),
                             ({"class_names": ["bell", "hum"], "num_classes": 3}, "num_classes 3 but lists 2"),
                             ([1, 2], "does not hold a JSON object")):
        meta.write_text(json.dumps(content))
        with pytest.raises(ValueError) as caught:
            load_config(meta)
        assert problem in str(caught.value) and "\n" not in str(caught.value), content


# ------------------------------------------------------------------ the container's path


INT16_ROUNDING = 1e-5  # the container's int16 PCM vs float32, clips peaking at ≥ 0.1 (tests/test_server.py)


@pytest.fixture
def container(tiny_export, monkeypatch):
    """The handlers as in the container: metadata.json found through US8K_METADATA, configuration
    reloaded (and reloaded again after the test, from the restored environment)."""
    monkeypatch.setenv(inference.METADATA_ENV, str(tiny_export / METADATA_FILE))
    monkeypatch.delenv(inference.THRESHOLD_ENV, raising=False)
    inference.reload_container_config()
    yield tiny_export
    monkeypatch.undo()
    inference.forget_container_config()  # outside the container again: no model's metadata to read


@pytest.fixture(scope="module")
def signature(tiny_export):
    import tensorflow as tf

    return tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION))


def serving_default(loaded, clips):
    """probabilities [n, C] of `serving_default` on the clips, padded into one batch."""
    import tensorflow as tf

    batch, lengths = pad_batch(clips)
    outputs = loaded.signatures[SERVING_SIGNATURE](**serving_inputs(tf.constant(batch), tf.constant(lengths)))
    return outputs[OUTPUT_PROBABILITIES].numpy()


def test_handlers_as_the_container_calls_them(container, signature):
    clips = [tone(1.0, freq=300), tone(4.0, freq=1200), tone(7.0, freq=90)]
    request = body({"instances": [c.tolist() for c in clips]})
    ctx = context("application/json", "windows=true")
    tfs_json = inference.input_handler(io.BytesIO(request), ctx)
    response = tf_serving_rest.predict(signature, tfs_json)
    direct = serving_default(signature, clips)
    answer, content_type = inference.output_handler(response, ctx)
    assert content_type == "application/json"
    predictions = json.loads(answer)["predictions"]
    assert len(predictions) == 3
    metadata = json.loads((container / METADATA_FILE).read_text())
    for row, prediction in enumerate(predictions):
        expected = direct[row]
        got = np.array([prediction["probabilities"][c] for c in metadata["class_names"]])
        np.testing.assert_allclose(got, expected, atol=INT16_ROUNDING)  # the container sends int16 PCM
        top = int(np.argmax(expected))
        assert prediction["undetermined"] == (prediction["confidence"] < metadata["threshold"])
        assert prediction["label"] == (UNDETERMINED if prediction["undetermined"] else metadata["class_names"][top])
    assert [len(p["windows"]) for p in predictions] == [1, 1, 3]  # 7 s → windows at 0, 2, 4 s
    # one clip alone gives the same answer as inside the padded batch
    alone_request = io.BytesIO(body({"instances": [clips[0].tolist()]}))
    alone = tf_serving_rest.predict(signature, inference.input_handler(alone_request, ctx))
    (single,) = json.loads(inference.output_handler(alone, ctx)[0])["predictions"]
    for c in metadata["class_names"]:
        assert abs(single["probabilities"][c] - predictions[0]["probabilities"][c]) <= 1e-5


def test_container_threshold_from_attributes_and_environment(container, signature, monkeypatch):
    wav = encode(tone(2.0, rate=44100), 44100)
    response = tf_serving_rest.predict(signature, inference.input_handler(wav, context("audio/wav")))
    (base,) = json.loads(inference.output_handler(response, context("audio/wav"))[0])["predictions"]
    above = min(1.0, base["confidence"] + 1e-3)
    assert base["confidence"] < above
    (strict,) = json.loads(
        inference.output_handler(response, context("audio/wav", f"threshold={above}"))[0])["predictions"]
    assert strict["label"] == UNDETERMINED and strict["undetermined"] and strict["confidence"] == base["confidence"]
    monkeypatch.setenv(inference.THRESHOLD_ENV, str(above))
    assert inference.reload_container_config().threshold == above
    (endpoint_wide,) = json.loads(inference.output_handler(response, context("audio/wav"))[0])["predictions"]
    assert endpoint_wide["undetermined"]
    (request_wins,) = json.loads(
        inference.output_handler(response, context("audio/wav", "threshold=0"))[0])["predictions"]
    assert not request_wins["undetermined"] and request_wins["label"] != UNDETERMINED


def test_container_errors(container):
    with pytest.raises(RequestError) as caught:
        inference.input_handler(io.BytesIO(b"not audio"), context("audio/flac"))
    assert caught.value.status == 400 and str(caught.value).startswith("400 Bad Request: body: not decodable")
    with pytest.raises(RequestError, match="415"):
        inference.input_handler(io.BytesIO(b"a,b"), context("text/csv"))
    with pytest.raises(RequestError, match="threshold"):
        inference.input_handler(io.BytesIO(b'{"instances": [[0.1]]}'), context("application/json", "threshold=2"))
    tfs_error = tf_serving_rest.Response(400, b'{"error": "lengths must have one entry per waveform row"}')
    with pytest.raises(RequestError, match="TensorFlow Serving answered 400: .*lengths must have"):
        inference.output_handler(tfs_error, context("application/json"))


# ------------------------------------------------------------------ hardening (pure functions)


@pytest.mark.parametrize("data,reason", [
    (b'{"instances": [[0.1]], "sample_rate": NaN}', "invalid_request"),
    (b"[" * 100, "json"),
    (b'{"instances": [[0.1]]', "json"),
    (b'\xff{"instances": [[0.1]]}', "json"),
    (b'{"instances": [{"b64": "%%"}]}', "base64"),
    (b'{"instances": [{"b64": "aGVsbG8gd29ybGQ="}]}', "undecodable"),
    (body({"instances": [[0.0] * 601_000], "sample_rate": 1000}), "too_long"),
])
def test_refusals_carry_a_reason_class(data, reason):
    with pytest.raises(RequestError) as caught:
        parse_request(data, "application/json")
    assert caught.value.status == 400 and caught.value.reason == reason


def test_brackets_and_escaped_quotes_inside_strings_are_not_structure():
    for note in ("[[[[[[[[[[[[[[", '\\"[[[[[[[[[[[[', "]]]]]]]]]]]]\\\\"):
        request = b'{"note": "' + note.encode() + b'", "instances": [[0.1, 0.2]]}'
        assert json.loads(request)["note"]  # valid JSON
        assert len(parse_request(request, "application/json")) == 1


def test_declared_length_is_checked_before_resampling():
    """A 2 KB body at 1 kHz that would resample to over the limit is refused from its length alone."""
    request = body({"instances": [[0.0] * 1000], "sample_rate": 1000})
    assert parse_request(request, "application/json", max_seconds=1.0)[0].shape == (SAMPLE_RATE,)
    with pytest.raises(RequestError, match="request holds 1.0 s of audio; the limit is 0.5 s"):
        parse_request(request, "application/json", max_seconds=0.5)


def test_windows_answers_carry_timeline_and_segments():
    config = ServingConfig(URBANSOUND8K_CLASSES, 0.6, 2.0)
    windows = np.zeros((1, 3, 10))
    windows[0, :2, 8], windows[0, :2, 0] = 0.9, 0.1
    windows[0, 2, 3], windows[0, 2, 0] = 0.7, 0.3
    (answer,) = predictions_from_outputs(windows.mean(axis=1), windows, np.array([3]), config=config,
                                         options=RequestOptions(windows=True), durations=[7.0])
    assert [w["label"] for w in answer["windows"]] == ["siren", "siren", "dog_bark"]
    assert answer["segments"] == [{"start_s": 0.0, "end_s": 6.0, "label": "siren", "confidence": 0.9},
                                  {"start_s": 4.0, "end_s": 7.0, "label": "dog_bark", "confidence": 0.7}]


@pytest.mark.parametrize("value", ["high", "1.5", "-0.1", "nan", "inf"])
def test_a_malformed_threshold_variable_is_refused_when_the_configuration_is_read(container, monkeypatch, value):
    """Read once when the container loads the handler (tests/test_container_handler.py: it stops there)."""
    monkeypatch.setenv(inference.THRESHOLD_ENV, value)
    with pytest.raises(ValueError, match=rf"^US8K_THRESHOLD must be a number in \[0, 1\] .*got {value!r}$"):
        inference.reload_container_config()
    monkeypatch.setenv(inference.THRESHOLD_ENV, " ")  # set but blank: the model's threshold
    assert inference.reload_container_config().threshold == load_config(container / METADATA_FILE).threshold
