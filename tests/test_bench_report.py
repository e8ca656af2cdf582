"""`us8k bench all`'s report: a real (quick) run of the ingest, serving and payload benchmarks
through the CLI, and the report's ratios, targets, machine and load figures, also as the docs' page
(`--markdown`). The benchmarks that
train or time TensorFlow for minutes (frontend, pipeline, label, quality) are skipped here; the
quality benchmark's figures are checked on a quality.json of the shape its runs write."""
import json

import pytest

import us8k
from benchmarks import quality, report

pytestmark = pytest.mark.timeout(180)


def _check_ratios(result: dict, name: str) -> None:
    assert result["figures"], f"{name} returned no figures"
    for key, figure in result["figures"].items():
        base = result["baselines"][figure["baseline"]]["value"]
        assert base > 0 and figure["value"] > 0, (name, key)
        assert figure["ratio"] == pytest.approx(figure["value"] / base), (name, key)
        target = figure.get("target")
        if target is None:
            assert figure["met"] is None, (name, key)
        else:  # worked out here, not by report.target_met (tested on its own below)
            assert target["op"] in (">=", "<="), (name, key)
            ratio, bound = figure["ratio"], target["ratio"]
            expected = ratio >= bound if target["op"] == ">=" else ratio <= bound
            assert figure["met"] is expected, (name, key)


@pytest.mark.timeout(420)
def test_bench_all_writes_json_and_markdown(tmp_path, capsys):
    skip = "label,frontend,pipeline,quality"
    page = tmp_path / "docs" / "benchmarks.md"
    assert us8k.main(["bench", "all", "--quick", "--skip", skip, "--output", str(tmp_path),
                      "--markdown", str(page)]) == 0
    assert f"us8k bench all: wrote {tmp_path / report.JSON_FILE}, {tmp_path / report.MARKDOWN_FILE} and {page}" \
        in capsys.readouterr().out
    data = json.loads((tmp_path / report.JSON_FILE).read_text())
    assert data["quick"] is True and data["skipped"] == skip.split(",")
    assert set(data["benchmarks"]) == {"ingest", "serving", "payload"}
    assert data["machine"]["cores"] >= 1 and data["machine"]["memory_gib"] > 0
    assert len(data["load_average_before"]) == 3 and len(data["load_average_after"]) == 3
    assert "numpy" in data["versions"]
    for name, result in data["benchmarks"].items():
        _check_ratios(result, name)
    payload, ingest, serving = (data["benchmarks"][n] for n in ("payload", "ingest", "serving"))
    assert payload["figures"]["pcm_bytes"]["ratio"] < 1  # the PCM body is smaller than JSON floats
    # the ingest job wrote every quick clip; its targets are against the bare loop (seed skipped here)
    assert ingest["params"]["clips"] == 100 and ingest["params"]["failed"] == 0
    assert ingest["figures"]["default_vs_bare_w"]["target"] == {"op": ">=", "ratio": 0.8}
    # the same clips as a folders collection, against the urbansound8k layout's job
    assert ingest["figures"]["folders_vs_urbansound8k"]["target"] == {"op": ">=", "ratio": 0.9}
    assert ingest["figures"]["folders_vs_urbansound8k"]["baseline"] == "urbansound8k"
    assert "seed" not in ingest["baselines"] and "bare_1" not in ingest["baselines"]  # --targets-only
    # serving: every run answered without errors; the top concurrency with batching carries the target
    assert all(f["errors"] == 0 for f in serving["figures"].values())
    assert serving["figures"]["rps_batching_on_c4"]["target"]["op"] == ">="
    assert serving["figures"]["p50_batching_off_c1"]["lower_is_better"] is True
    md = (tmp_path / report.MARKDOWN_FILE).read_text()
    assert page.read_text() == md  # the docs' page is the report, as written
    assert md.startswith("# Benchmarks: `us8k bench all` of ") and "## payload" in md and "| PCM windows body" in md
    assert f"Written by `us8k bench all --output {tmp_path} --quick --skip {skip} --markdown {page}`" in md
    assert f"Skipped: {skip.replace(',', ', ')}." in md
    # each benchmark's section says what it measures and how to run it alone, at the sizes used here
    assert ("Measures: endpoint requests/s and latency, batching on and off. "
            "Run alone: `us8k bench serving --model tiny") in md
    assert "## ingest" in md and "## serving" in md and "| target |" in md and "Targets: " in md
    verdicts = [f["met"] for r in data["benchmarks"].values() for f in r["figures"].values() if f["met"] is not None]
    assert f"Targets: {sum(verdicts)} of {len(verdicts)} met" in md


def test_targets_are_met_by_their_side():
    assert report.target_met({"op": ">=", "ratio": 0.8}, 0.8) is True
    assert report.target_met({"op": ">=", "ratio": 0.8}, 0.79) is False
    assert report.target_met({"op": "<=", "ratio": 1.5}, 1.2) is True
    assert report.target_met({"op": "<=", "ratio": 1.5}, 1.6) is False
    assert report.target_met(None, 2.0) is None and report.target_met({"op": ">=", "ratio": 1}, None) is None
    with pytest.raises(ValueError, match="unknown target op"):
        report.target_met({"op": ">", "ratio": 1}, 2.0)


def test_quality_figures_are_the_strong_arm_against_the_seed_arm():
    runs = [{"test_accuracy": a} for a in (0.5, 0.6)]
    result = {"split": {"clips_per_class_per_fold": 16, "epochs": 30, "arms": {
        "seed": {"runs": runs, "test_accuracy_mean": 0.55, "test_accuracy_std": 0.07,
                 "test_macro_f1_mean": 0.5, "test_macro_f1_std": 0.05},
        "strong": {"runs": runs, "test_accuracy_mean": 0.6, "test_accuracy_std": 0.1,
                   "test_macro_f1_mean": 0.45, "test_macro_f1_std": 0.1}}},
        "cv": {"clips_per_class_per_fold": 3, "epochs": 8, "arms": {
            "seed": {"accuracy_mean": 0.3, "accuracy_std": 0.1, "macro_f1_mean": 0.2, "macro_f1_std": 0.1},
            "strong": {"accuracy_mean": 0.2, "accuracy_std": 0.1, "macro_f1_mean": 0.1, "macro_f1_std": 0.1}}}}
    built = report.with_ratios(quality._report(result, ["seed", "strong"]))
    figures = built["figures"]
    assert set(figures) == {"split_strong_accuracy", "split_strong_macro_f1",
                            "cv_strong_accuracy", "cv_strong_macro_f1"}
    assert figures["split_strong_accuracy"]["ratio"] == pytest.approx(0.6 / 0.55)
    assert figures["split_strong_accuracy"]["met"] is True and figures["split_strong_macro_f1"]["met"] is False
    assert figures["cv_strong_accuracy"]["met"] is False
    assert built["params"] == {"split": {"clips_per_class_per_fold": 16, "epochs": 30},
                               "cv": {"clips_per_class_per_fold": 3, "epochs": 8}}


def test_a_benchmark_without_figures_is_reported_as_such():
    built = report.build({"ingest": 0, "broken": {"error": "us8k bench x: error: boom"}}, quick=False,
                         load_before=(1.0, 1.0, 1.0), load_after=(2.0, 2.0, 2.0), started=report.now(), seconds=1.0)
    assert built["benchmarks"]["ingest"]["figures"] is None
    md = report.markdown(built)
    assert "No figures: this benchmark prints its figures and returns none" in md
    assert "Failed: us8k bench x: error: boom" in md


def test_the_header_states_the_machine_the_load_and_the_command():
    built = report.build({"payload": 0}, quick=False, load_before=(0.25, 0.5, 1.0), load_after=(1.5, 2.0, 2.25),
                         started="2026-12-02T10:35:18+00:00", seconds=1017.4)
    built["machine"] = {"cpu_model": "AMD EPYC 7B13", "cores": 2, "usable_cores": 2, "memory_gib": 23.5,
                        "os": "Linux-6.18", "python": "3.11.7"}
    built["command"] = "us8k bench all --markdown docs/benchmarks.md"
    header = report.markdown(built).split("## payload")[0]
    assert header.startswith("# Benchmarks: `us8k bench all` of 2026-12-02T10:35:18+00:00\n")
    assert "Written by `us8k bench all --markdown docs/benchmarks.md`" in header
    assert "- Machine: AMD EPYC 7B13, 2 cores (2 usable), 23.5 GiB; Linux-6.18; Python 3.11.7\n" in header
    assert "- Load average (1, 5, 15 min): before 0.25, 0.50, 1.00; after 1.50, 2.00, 2.25; 1017 s in all\n" in header


def test_the_report_lists_what_it_does_not_measure():
    built = report.build({}, quick=False, load_before=(0, 0, 0), load_after=(0, 0, 0), started=report.now(),
                         seconds=0.0)
    built["separate"] = [["us8k bench serving --soak 300", "five minutes at concurrency 32"]]
    assert "## Not in this report\n\n- `us8k bench serving --soak 300`: five minutes at concurrency 32.\n" \
        in report.markdown(built)


def test_unknown_skip_is_a_one_line_error(capsys):
    assert us8k.main(["bench", "all", "--skip", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("us8k bench: error: unknown benchmark(s) nope; known: ingest, label") and err.count("\n") == 1


def test_ingest_report_sets_each_beam_side_against_the_bare_loop():
    """`bench all --quick` times only the sides its targets compare (--targets-only); the report of a full
    run's sides (their figures as each side's process prints them) is checked here."""
    from benchmarks import ingest

    def side(key, rows, seconds, **extra):
        return {"key": key, "label": key, "rows": rows, "seconds": seconds, "load": 1.0, "failed": 0, **extra}

    results = [side("default", 100, 10.0, shards=3, largest_shard_mb=1.5, peak_rss_mib=300.0),
               side("folders", 100, 9.0), side("default_again", 100, 11.0), side("no_cap", 100, 8.0),
               side("planned", 100, 12.5), side("bare_1", 100, 20.0),
               side("bare_w", 100, 12.0, steady_seconds=10.0), side("seed", 100, 50.0)]
    built = ingest._report(results, workers=2, rows=100)
    figures = built["figures"]
    assert set(figures) == {"default_vs_bare_w", "default_vs_bare_w_steady", "default_vs_bare_1", "default_vs_seed",
                            "no_cap_vs_bare_w", "planned_vs_bare_w", "folders_vs_urbansound8k"}
    for key, seconds in (("no_cap", 8.0), ("planned", 12.5)):  # against the bare loop, without a target
        figure = figures[f"{key}_vs_bare_w"]
        assert figure["baseline"] == "bare_w" and "target" not in figure
        assert figure["value"] == pytest.approx(100 / seconds)
    assert figures["default_vs_bare_w"]["target"] == {"op": ">=", "ratio": ingest.TARGET_BEAM_OVER_BARE}
    assert figures["default_vs_seed"]["target"] == {"op": ">=", "ratio": ingest.TARGET_BEAM_OVER_SEED}
    assert built["baselines"]["urbansound8k"]["value"] == pytest.approx(200 / 21.0)  # the two default runs pooled
    assert built["baselines"]["bare_w_steady"]["value"] == pytest.approx(100 / 10.0)
    assert built["params"] == {"clips": 100, "workers": 2, "failed": 0, "shards": 3, "largest_shard_mb": 1.5,
                               "job_peak_rss_mib": 300}
