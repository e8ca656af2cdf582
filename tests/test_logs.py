"""Logs read well in a file: `us8k synth` and `us8k ingest` run with their output redirected (as in
`make demo > log`) write no ANSI escape sequences or carriage returns, and no TensorFlow C++ log
lines except its oneDNN notice — in every process, Beam's multi_processing workers included."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A C++ log line: absl's "I0412 10:11:12.345678  42 file.cc:7] …" (before absl::InitializeLog the
# time is "00:00:<epoch seconds>") or TSL's older "2026-04-12 10:11:12.345678: I file.cc:7] …".
CPP_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "
                          r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )[\w./-]+:\d+\]")
ONEDNN_NOTICE = "oneDNN custom operations are on."
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NOTICES_PER_PROCESS = 2  # libtensorflow_framework and the profiler plugin each log it once (TF 2.21)


def us8k_into_file(log_path, *args) -> str:
    """Run `python -m us8k ARGS > log_path 2>&1` as a user would; return the log's text."""
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "NO_COLOR")}
    env["TERM"] = "xterm-256color"  # a colour terminal type: only the redirection may keep colours out
    with open(log_path, "wb") as log:
        done = subprocess.run([sys.executable, "-m", "us8k", *args], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, cwd=REPO, env=env, timeout=100)
    text = open(log_path, "rb").read().decode("utf-8")
    assert done.returncode == 0, text
    return text


def assert_reads_well_in_a_file(text: str, tensorflow_processes: int) -> None:
    assert "\x1b" not in text, "ANSI escape sequence in the log"
    assert "\r" not in text, "carriage return (a redrawn progress line) in the log"
    cpp_lines = [line for line in text.splitlines() if CPP_LOG_LINE.match(line)]
    assert [line for line in cpp_lines if ONEDNN_NOTICE not in line] == []
    assert len(cpp_lines) <= NOTICES_PER_PROCESS * tensorflow_processes, cpp_lines
    assert text.count(ABSL_PREAMBLE) <= len(cpp_lines)  # only ever as the notice's preamble


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    data = root / "data"
    text = us8k_into_file(root / "synth.log", "synth", str(data), "--clips-per-class-per-fold", "1",
                          "--folds", "1", "--corrupt", "1")
    return {"root": root, "data": data, "synth_log": text}


def test_synth_log_is_plain_text(dataset):
    text = dataset["synth_log"]
    assert "wrote 10 clips + 1 corrupt = 11 CSV rows" in text
    assert_reads_well_in_a_file(text, tensorflow_processes=0)  # synth imports no TensorFlow


def test_ingest_log_is_plain_text(dataset):
    out = dataset["root"] / "records"
    text = us8k_into_file(dataset["root"] / "ingest.log", "ingest", "--data-dir", str(dataset["data"]),
                          "--output", str(out))
    assert "10 clips written + 1 failed == 11 rows in the CSV (nothing lost)" in text
    assert_reads_well_in_a_file(text, tensorflow_processes=1)  # in_memory: the workers are threads


def test_ingest_multi_processing_workers_inherit_the_log_level(dataset):
    # The worker is a subprocess that imports TensorFlow itself; Beam's own Python logging of the worker
    # harness (INFO:… lines) is not TensorFlow's and not checked here.
    out = dataset["root"] / "records_mp"
    text = us8k_into_file(dataset["root"] / "ingest_mp.log", "ingest", "--data-dir", str(dataset["data"]),
                          "--output", str(out), "--direct_running_mode=multi_processing",
                          "--direct_num_workers=1")
    assert "10 clips written + 1 failed == 11 rows in the CSV (nothing lost)" in text
    assert_reads_well_in_a_file(text, tensorflow_processes=2)  # the driver (if it imports TF) and one worker


WORKER_NOTICES = """
import logging
import beam.ingest, beam.label, beam.label_model
from beam.notices import FILTERS
loggers = {name for name, _ in FILTERS} | {"us8k.label"}
print("on import:", sum(len(logging.getLogger(name).filters) + len(logging.getLogger(name).handlers)
                        for name in loggers))
beam.label_model.SavedModelHandler("unused").set_environment_vars()  # what RunInference's set-up calls on a worker
logging.warning("Resource module is not available for current platform, memory usage cannot be fetched.")
logging.warning("a warning of ours")
"""


def test_beam_modules_configure_no_logging_on_import_and_the_workers_handler_filters_its_notice():
    """Importing the jobs' modules installs no filter and no handler (the entry points do: cli/ingest.py,
    cli/label.py); a worker process, which runs no entry point, gets RunInference's notice filtered by
    the model handler's set-up."""
    done = subprocess.run([sys.executable, "-c", WORKER_NOTICES], capture_output=True, text=True, cwd=REPO,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    assert "on import: 0" in done.stdout
    assert "a warning of ours" in done.stderr and "Resource module" not in done.stderr
