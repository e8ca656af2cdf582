"""Beam's log lines that tell a us8k user nothing, as logging filters, and `quiet_beam_notices()`
that installs them. Importing this module installs nothing.

Who installs them, and why there (a filter lives in one process's loggers only):
- `us8k ingest` and `us8k label` (cli/ingest.py, cli/label.py), in the process that parses the
  command and drives the job, before it first imports Beam: the apitools notice is logged while Beam
  is imported, the in_memory notice when the FnApiRunner starts, and with Beam's local in_memory or
  multi_threading runner the workers are threads of that same process;
- the labelling model handler, in every worker process (beam.label_model: Beam calls its
  `set_environment_vars` in RunInference's setup, before the model is loaded and the resource notice
  logged), since a worker of Beam's multi_processing mode or of Dataflow runs none of our entry
  point. The ingestion's workers log none of these: nothing to install there. (A worker imports Beam
  before any code of ours runs, so the apitools notice cannot be filtered there; Dataflow's
  container has the GCP extra, whose absence that notice reports.)
"""
from __future__ import annotations

import logging

ROOT_LOGGER = ""
FN_RUNNER_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner"


def not_apitools_notice(record: logging.LogRecord) -> bool:
    """Beam logs "apitools not found" on the root logger at import when the GCP extra is absent."""
    return not str(record.msg).startswith("apitools not found")


def not_in_memory_workers_notice(record: logging.LogRecord) -> bool:
    """FnApiRunner warns that in_memory with several workers has no parallel effect; in Beam 2.77 it
    does run each stage's partitions in parallel threads (tests/test_pipeline.py checks it)."""
    return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


def not_resource_module_notice(record: logging.LogRecord) -> bool:
    """Beam 2.77's RunInference imports `resource` in one try with its ModelManager, which needs torch:
    without torch `resource` is None and every model load warns "Resource module is not available…"
    (only RunInference's memory metric is lost)."""
    return not str(record.msg).startswith("Resource module is not available")


FILTERS = ((ROOT_LOGGER, not_apitools_notice),
           (FN_RUNNER_LOGGER, not_in_memory_workers_notice),
           (ROOT_LOGGER, not_resource_module_notice))


def quiet_beam_notices() -> None:
    """Install every filter of FILTERS on its logger in this process (once: a second call adds nothing)."""
    for name, notice_filter in FILTERS:
        logger = logging.getLogger(name)
        if notice_filter not in logger.filters:
            logger.addFilter(notice_filter)
