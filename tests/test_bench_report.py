"""`us8k bench all`'s report: a real (quick) run of the payload benchmark through the CLI, and the
report's ratios, machine and load figures. The other benchmarks are skipped here (minutes each)."""
import json

import pytest

import us8k
from benchmarks import report

pytestmark = pytest.mark.timeout(180)


def test_bench_all_writes_json_and_markdown(tmp_path, capsys):
    skip = "ingest,label,frontend,pipeline,serving,quality"
    assert us8k.main(["bench", "all", "--quick", "--skip", skip, "--output", str(tmp_path)]) == 0
    assert "us8k bench all: wrote" in capsys.readouterr().out
    data = json.loads((tmp_path / report.JSON_FILE).read_text())
    assert data["quick"] is True and data["skipped"] == skip.split(",")
    assert set(data["benchmarks"]) == {"payload"}
    assert data["machine"]["cores"] >= 1 and data["machine"]["memory_gib"] > 0
    assert len(data["load_average_before"]) == 3 and len(data["load_average_after"]) == 3
    assert "numpy" in data["versions"]
    payload = data["benchmarks"]["payload"]
    for key, figure in payload["figures"].items():
        base = payload["baselines"][figure["baseline"]]["value"]
        assert figure["ratio"] == pytest.approx(figure["value"] / base), key
    assert payload["figures"]["pcm_bytes"]["ratio"] < 1  # the PCM body is smaller than JSON floats
    md = (tmp_path / report.MARKDOWN_FILE).read_text()
    assert md.startswith("# us8k bench all") and "## payload" in md and "| PCM windows body" in md


def test_a_benchmark_without_figures_is_reported_as_such():
    built = report.build({"ingest": 0, "broken": {"error": "us8k bench x: error: boom"}}, quick=False,
                         load_before=(1.0, 1.0, 1.0), load_after=(2.0, 2.0, 2.0), started=report.now(), seconds=1.0)
    assert built["benchmarks"]["ingest"]["figures"] is None
    md = report.markdown(built)
    assert "No figures: this benchmark prints its figures and returns none" in md
    assert "Failed: us8k bench x: error: boom" in md


def test_unknown_skip_is_a_one_line_error():
    with pytest.raises(SystemExit, match=r"^us8k bench: error: unknown benchmark\(s\) nope"):
        us8k.main(["bench", "all", "--skip", "nope"])
