"""beam.ingest_transforms and the UrbanSound8K reader (beam.layout_csvs): metadata rows are validated
with a reason, and DecodeClips routes every row to exactly one of its tagged outputs (a real in-process
Beam run on real files), writing each record with its row's class name and group."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from wav_files import encode

from beam.ingest_rows import BadRow, ClipRow, RowError, header_columns
from beam.ingest_transforms import ERRORS_TAG, RECORDS_TAG, DecodeClips
from beam.layout_csvs import URBANSOUND8K_COLUMNS, parse_urbansound8k_row, read_rows
from tfdata import contract as c

pytestmark = pytest.mark.timeout(120)

HEADER = ",".join(c.CSV_COLUMNS)
COLUMNS = header_columns(HEADER, URBANSOUND8K_COLUMNS)


def parse_row(line: int, text: str, columns: dict[str, int]) -> ClipRow:
    return parse_urbansound8k_row(line, text, columns)


def read_row(line: int, text: str, columns: dict[str, int]) -> ClipRow | BadRow:
    """The reader's own handling of one line: a ClipRow, or a BadRow with the reason and the text."""
    (row,) = read_rows([(line, text)], lambda number, row_text: parse_urbansound8k_row(number, row_text, columns))
    return row


def test_header_maps_columns_by_name_in_any_order():
    shuffled = "class,classID,fold,salience,end,start,fsID,slice_file_name"
    row = parse_row(2, "dog_bark,3,7,2,4.0,0.0,123,123-3-0-0.wav", header_columns(shuffled, URBANSOUND8K_COLUMNS))
    assert (row.slice_file_name, row.group, row.fold, row.label, row.salience) == ("123-3-0-0.wav", 123, 7, 3, 2)
    assert row.relative_path == "audio/fold7/123-3-0-0.wav" and row.class_name == "dog_bark"


def test_header_missing_a_column_is_refused():
    with pytest.raises(RowError, match="classID"):
        header_columns("slice_file_name,fsID,start,end,salience,fold,class", URBANSOUND8K_COLUMNS)


@pytest.mark.parametrize("text, reason", [
    ("1-3-0-0.wav,1,0,4,1,3,12,dog_bark", "unknown classID 12"),
    ("1-3-0-0.wav,1,0,4,1,0,3,dog_bark", "unknown fold 0"),
    ("1-3-0-0.wav,1,0,4,1,11,3,dog_bark", "unknown fold 11"),
    ("1-3-0-0.wav,1,0,4,1,x,3,dog_bark", "fold 'x' is not an integer"),
    ("1-3-0-0.wav,one,0,4,1,3,3,dog_bark", "fsID 'one' is not an integer"),
    ("1-3-0-0.wav,1,0,4,1,3,3,siren", "contradicts classID 3"),
    ("../../etc/passwd,1,0,4,1,3,3,dog_bark", "is not a file name"),
    (",1,0,4,1,3,3,dog_bark", "is not a file name"),
    ("1-3-0-0.wav,1,0,4", "4 fields, expected at least 8"),
])
def test_bad_rows_are_refused_with_a_reason(text, reason):
    with pytest.raises(RowError, match=reason.replace("(", r"\(")):
        parse_row(5, text, COLUMNS)
    bad = read_row(5, text, COLUMNS)
    assert isinstance(bad, BadRow) and reason in bad.reason and bad.text == text and bad.line == 5


def test_good_row():
    row = parse_row(9, "100032-3-0-0.wav,100032,0.0,0.317551,1,5,3,dog_bark", COLUMNS)
    assert (row.line, row.fold, row.label, row.group, row.salience) == (9, 5, 3, 100032, 1)
    again = read_row(9, "100032-3-0-0.wav,100032,0.0,0.317551,1,5,3,dog_bark", COLUMNS)
    assert isinstance(again, ClipRow) and again.fold == 5


@pytest.mark.timeout(180)
def test_decode_clips_routes_each_row_to_one_tagged_output(tmp_path):
    fold_dir = tmp_path / c.AUDIO_DIR / "fold2"
    fold_dir.mkdir(parents=True)
    t = np.arange(48000 * 2) / 48000
    (fold_dir / "1-4-0-0.wav").write_bytes(encode(0.2 * np.sin(2 * np.pi * 300 * t), 48000, subtype="PCM_24"))
    (fold_dir / "2-4-0-0.wav").write_bytes(b"")
    (tmp_path / "rain").mkdir()
    (tmp_path / "rain" / "r.wav").write_bytes(encode(0.2 * np.sin(2 * np.pi * 500 * t[:48000]), 48000))
    rows = [read_row(line, text, COLUMNS) for line, text in [
        (2, "1-4-0-0.wav,1,0,2,1,2,4,drilling"),
        (3, "2-4-0-0.wav,2,0,4,1,2,4,drilling"),
        (4, "3-4-0-0.wav,3,0,4,1,2,4,drilling"),  # not on disk
        (5, "4-4-0-0.wav,4,0,4,1,2,44,drilling"),
    ]] + [  # a listed file of another collection: its own class name, label, fold and group
        ClipRow(line=None, relative_path="rain/r.wav", slice_file_name="rain/r.wav", label=1, class_name="rain",
                fold=13, group=2**62 + 5),
        BadRow(line=None, text=None, reason="no class folder", file="top.wav"),
    ]
    options = PipelineOptions(["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        out = p | beam.Create(rows) | DecodeClips(str(tmp_path))
        folds = out[RECORDS_TAG] | "Fold" >> beam.Map(
            lambda kv: (kv[0], type(kv[1]).__name__, len(kv[1]) > 2 * c.CLIP_SAMPLES,
                        b"\x0a\x04rain" in kv[1], b"\x0a\x08drilling" in kv[1]))
        assert_that(folds, equal_to([(2, "bytes", True, False, True), (13, "bytes", True, True, False)]),
                    label="Records")
        reasons = out[ERRORS_TAG] | "Reason" >> beam.Map(
            lambda e: (e["line"], e["file"], e["fold"], e["reason"][:20], "row" in e))
        assert_that(reasons, equal_to([
            (3, "audio/fold2/2-4-0-0.wav", 2, "empty input (0 bytes", False),
            (4, "audio/fold2/3-4-0-0.wav", 2, "file not found", False),
            (5, None, None, "bad CSV row: unknown", True),
            (None, "top.wav", None, "no class folder", False),
        ]), label="Errors")


@pytest.mark.timeout(300)
def test_long_files_are_ingested_from_their_first_seconds_only_and_exactly(tmp_path):
    """A 3-minute stereo WAV, a 10-minute FLAC and a 1-minute AAC (through FFmpeg): each file's records
    equal, byte for byte, the windows (4 s every 2 s) of its full decode cropped to MAX_CLIP_SECONDS."""
    import av

    from tfdata import windowing
    from tfdata.audio import decode_audio
    from tfdata.records import serialize_clip

    fold_dir = tmp_path / c.AUDIO_DIR / "fold3"
    fold_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (fold_dir / "1-8-0-0.wav").write_bytes(encode((0.1 * rng.standard_normal((180 * 44100, 2))).astype(np.float32),
                                                  44100))
    (fold_dir / "2-8-0-0.flac").write_bytes(encode((0.1 * rng.standard_normal(600 * 8000)).astype(np.float32), 8000,
                                                   "FLAC"))
    with av.open(str(fold_dir / "3-8-0-0.m4a"), mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        x = (0.1 * rng.standard_normal(60 * 48000)).astype(np.float32)
        for start in range(0, x.size, 1024):
            frame = av.AudioFrame.from_ndarray(x[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    names = ["1-8-0-0.wav", "2-8-0-0.flac", "3-8-0-0.m4a"]
    rows = [read_row(2 + i, f"{name},{i + 1},0,4,1,3,8,siren", COLUMNS) for i, name in enumerate(names)]
    expected = []
    for i, name in enumerate(names):
        kept = decode_audio(fold_dir / name)[:c.MAX_CLIP_SECONDS * c.SAMPLE_RATE]
        assert len(kept) == c.MAX_CLIP_SECONDS * c.SAMPLE_RATE
        windows, valid = windowing.frame(kept), windowing.valid_samples(len(kept))
        assert len(windows) == 29 and valid[-1] == c.CLIP_SAMPLES
        expected += [(3, serialize_clip(window, n, label=8, class_name="siren", fold=3, fsid=i + 1,
                                        slice_file_name=name, salience=1, window=k, windows=len(windows)))
                     for k, (window, n) in enumerate(zip(windows, valid))]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = p | beam.Create(rows) | DecodeClips(str(tmp_path))
        assert_that(out[RECORDS_TAG], equal_to(expected), label="Records")
        assert_that(out[ERRORS_TAG], equal_to([]), label="Errors")
