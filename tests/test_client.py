"""`us8k predict` against the local endpoint over real HTTP: lines, JSON, waveform files, options,
refused files reported while the others go on, clear errors for an unreachable endpoint."""
import json
import socket

import endpoint_servers
import httpx
import numpy as np
import pytest
import soundfile as sf
from cli_failure import failure

import us8k
from serving.client import content_type_for
from tfdata.contract import UNDETERMINED, URBANSOUND8K_CLASSES

pytestmark = pytest.mark.timeout(180)

server = endpoint_servers.server_fixture()


def clip(seconds, rate, freq, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, fmt, rate, freq in [("dog.wav", "WAV", 44100, 500), ("horn.flac", "FLAC", 22050, 1500),
                                  ("street.ogg", "OGG", 48000, 90), ("long.mp3", "MP3", 44100, 700)]:
        seconds = 9.0 if name == "long.mp3" else 4.0
        path = folder / name
        sf.write(path, clip(seconds, rate, freq), rate, format=fmt)
        made[name] = path
    bad = folder / "broken.wav"
    bad.write_text("this is not a WAV file")
    made["broken.wav"] = bad
    return made


def answer(server, path, **params):
    response = httpx.post(server.url + "/invocations", content=path.read_bytes(), params=params,
                          headers={"Content-Type": content_type_for(path)}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_content_types_by_extension():
    assert content_type_for("a.WAV") == "audio/wav" and content_type_for("b.flac") == "audio/flac"
    assert content_type_for("c.ogg") == "audio/ogg" and content_type_for("d.mp3") == "audio/mpeg"
    assert content_type_for("e.m4a") == "application/octet-stream"


def test_one_line_per_file(server, files, capsys):
    names = ["dog.wav", "horn.flac", "street.ogg", "long.mp3"]
    assert us8k.main(["predict", *(str(files[n]) for n in names), "--url", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, name in zip(lines, names):
        path, label, confidence = line.split("\t")
        (expected,) = answer(server, files[name])
        assert path == str(files[name]) and label == expected["label"]
        assert float(confidence) == pytest.approx(expected["confidence"], abs=5e-4)
        assert label in URBANSOUND8K_CLASSES or label == UNDETERMINED


def test_json_threshold_and_windows(server, files, capsys):
    (plain,) = answer(server, files["long.mp3"])
    above = min(1.0, plain["confidence"] + 1e-3)
    assert us8k.main(["predict", str(files["long.mp3"]), "--url", server.url, "--json", "--windows",
                      "--threshold", str(above)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["file"] == str(files["long.mp3"])
    (prediction,) = printed["predictions"]
    assert prediction["label"] == UNDETERMINED and prediction["probabilities"] == plain["probabilities"]
    assert [w["start_s"] for w in prediction["windows"]] == [0.0, 2.0, 4.0, 6.0]  # ≈9 s of MP3
    assert us8k.main(["predict", str(files["long.mp3"]), "--url", server.url, "--windows"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[1].strip().startswith("0.0s")


def test_waveform_json_files(server, tmp_path, capsys):
    rows = [clip(1.0, 22050, 400).tolist(), clip(2.0, 22050, 800, 1).tolist()]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": rows}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(rows[0]))
    assert us8k.main(["predict", "--waveform", str(request), "--url", server.url]) == 0
    assert us8k.main(["predict", "--waveform", str(bare), "--url", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{request}[0]", f"{request}[1]", str(bare)]
    assert lines[0].split("\t")[1:] == lines[2].split("\t")[1:]  # the same clip, alone or in a batch


def test_refused_file_is_reported_and_the_rest_go_on(server, files, tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    code = us8k.main(["predict", str(files["broken.wav"]), str(missing), str(files["dog.wav"]), "--url", server.url])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith(str(files["dog.wav"]) + "\t")
    errors = captured.err.splitlines()
    assert errors[0].startswith(f"us8k predict: error: {files['broken.wav']}: 400 body: not decodable audio")
    assert errors[1] == f"us8k predict: error: {missing}: No such file or directory"


def test_unreachable_endpoint_is_one_line(files):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert failure(["predict", str(files["dog.wav"]), "--url", f"http://127.0.0.1:{port}"]) == \
        f"us8k predict: error: cannot reach http://127.0.0.1:{port}: Connection refused"


def test_argument_errors():
    assert "give audio FILEs" in failure(["predict", "--url", "http://127.0.0.1:1"])
    assert "--threshold must be in [0, 1]" in failure(["predict", "x.wav", "--threshold", "3"])
