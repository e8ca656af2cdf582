"""Shared fixtures. Two logical CPU devices are configured before TensorFlow initialises,
so MirroredStrategy runs two replicas on this GPU-less machine. TensorFlow accepts a logical
device configuration only before it initialises, hence here, before any test imports it.

Under pytest-xdist (`make test`: four workers) every test file is one scope of the scheduler, so a
file's module fixtures are built once, in one worker; the files that start many processes or much
memory of their own (PROCESS_HUNGRY) share one scope, so they run one after another, never side by
side. Scopes are handed out heaviest first (HEAVIEST_FIRST, from `--durations`), so that no long
file starts last. Artefacts the whole run shares are built once in tests/shared_dir.py."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One TensorFlow intra-op thread per process (each worker and every process it starts), unless set: with
# more workers than cores, TensorFlow's default of one intra-op thread per core in every process
# oversubscribed the cores (measured on the whole suite: docs/testing.md). What a test checks does not
# depend on it; the memory-bound test serves at TensorFlow's default.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
# Keras and matplotlib write their caches and config under $HOME otherwise: tests write only in temp dirs.
_SCRATCH = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"us8k-tests-{os.getuid()}")
os.environ.setdefault("KERAS_HOME", os.path.join(_SCRATCH, "keras"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_SCRATCH, "matplotlib"))

import pytest  # noqa: E402
import shared_dir  # noqa: E402
import wheel_cache  # noqa: E402

# Files that start several TensorFlow processes, or a server whose memory they measure: one at a time.
PROCESS_HUNGRY = ("test_multiworker.py", "test_end_to_end.py", "test_memory_bound.py", "test_job_entry.py")
# The longest files first (from `make test`'s --durations), then the rest in collection order.
HEAVIEST_FIRST = ("test_bench_report.py", "test_collections.py", "test_cv.py", "test_train.py", "test_page.py",
                  "test_label.py", "test_synth.py", "test_pipeline.py", "test_ingest_s3.py", "test_dataflow.py",
                  "test_architectures.py", "test_custom_loop.py", "test_calibration.py", "test_deploy.py",
                  "test_package.py", "test_server.py")


def _file(nodeid: str) -> str:
    return os.path.basename(nodeid.split("::", 1)[0])


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        if name in PROCESS_HUNGRY:
            return 0
        return 1 + HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST else 1 + len(HEAVIEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduler with one scope per file, the process-hungry files one scope together.
    (Not `--dist loadgroup` with xdist_group marks: xdist 3.8 renames the items' `_nodeid` for it,
    which pytest 9.2's nodes no longer read, so the groups are silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    # xdist's default (--loadscope-reorder) queues the scopes by their number of tests, which would put the
    # 393 quick docs checks first and the few long process-hungry tests last: keep the order above instead.
    config.option.loadscopereorder = False

    class FileScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return "process-hungry" if _file(nodeid) in PROCESS_HUNGRY else nodeid.split("::", 1)[0]

    return FileScopes(config, log)


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the xdist controller runs no test: no TensorFlow in it
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


# ---------------------------------------------------------------------------------------------
# Training fixtures (tests/test_pipeline_tfdata.py, test_train.py, test_evaluate.py): small
# TFRecord sets of class-distinguishable tones, written straight with records.serialize_clip.
# ---------------------------------------------------------------------------------------------
TONE_BASE_HZ = 150.0  # class k: a tone at 150 · 1.5**k Hz (plus its octave and a little noise)


def tone_clip(label, rng, num_samples=None):
    """One zero-padded 4 s clip (float32 [CLIP_SAMPLES]) whose pitch tells its class."""
    import numpy as np

    from tfdata import contract as c

    n = c.CLIP_SAMPLES if num_samples is None else int(num_samples)
    t = np.arange(n) / c.SAMPLE_RATE
    f = TONE_BASE_HZ * 1.5 ** label * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * np.pi)
    x = np.sin(2 * np.pi * f * t + phase) + 0.5 * np.sin(4 * np.pi * f * t + phase)
    x = rng.uniform(0.1, 0.5) * x / 1.5 + 0.01 * rng.standard_normal(n)
    clip = np.zeros(c.CLIP_SAMPLES, np.float32)
    clip[:n] = x
    return clip


def write_tone_records(records_dir, per_fold, *, seed=0, shards=1, short_every=3, audio_seed=None,
                       class_names=None):
    """Write `per_fold` ({fold: clips}) as `records_dir/fold{k}/tones-0000i-of-0000n.tfrecord`.

    Labels cycle through the classes of `class_names` (default UrbanSound8K's ten, as records without
    a manifest are read; `write_tone_manifest` records another list); every `short_every`-th clip is
    shorter than 4 s (zero padded, num_samples < CLIP_SAMPLES). `audio_seed` ({fold: seed}) changes
    one fold's audio only. Returns [(fold, label, slice_file_name)] in write order."""
    import os

    import numpy as np
    import tensorflow as tf

    from tfdata import contract as c
    from tfdata import records

    class_names = c.URBANSOUND8K_CLASSES if class_names is None else tuple(class_names)
    written = []
    for fold, count in per_fold.items():
        rng = np.random.default_rng([seed, fold, (audio_seed or {}).get(fold, 0)])
        fold_dir = os.path.join(os.fspath(records_dir), c.fold_dir_name(fold))
        os.makedirs(fold_dir, exist_ok=True)
        writers = [tf.io.TFRecordWriter(os.path.join(fold_dir, f"tones-{i:05d}-of-{shards:05d}{c.RECORD_SUFFIX}"))
                   for i in range(shards)]
        for i in range(count):
            label = i % len(class_names)
            short = short_every and i % short_every == short_every - 1
            n = int(rng.integers(c.SAMPLE_RATE // 2, c.CLIP_SAMPLES)) if short else c.CLIP_SAMPLES
            name = f"{1000 * fold + i}-{label}-0-0.wav"
            writers[i % shards].write(records.serialize_clip(
                tone_clip(label, rng, n), n, label=label, class_name=class_names[label], fold=fold,
                fsid=1000 * fold + i, slice_file_name=name, salience=1))
            written.append((fold, label, name))
        for w in writers:
            w.close()
    return written


def write_tone_manifest(records_dir, written, class_names, *, schema_version=2, layout="folders"):
    """RECORDS/manifest.json as ingestion writes it (schema 2) for tone records `written` by
    write_tone_records with `class_names`: the class list in label order, the folds and their counts."""
    import collections
    import json
    import os

    from tfdata import contract as c

    per_fold = collections.defaultdict(collections.Counter)
    for fold, label, _ in written:
        per_fold[fold][class_names[label]] += 1
    folds = {str(k): {"rows": sum(n.values()), "examples": sum(n.values()), "errors": 0,
                      "shard_glob": c.fold_shard_glob(k), "classes": dict(n)} for k, n in sorted(per_fold.items())}
    manifest = {"schema_version": schema_version, "layout": layout, "class_names": list(class_names),
                "groups": "none: each file its own group", "fold_assignment": "dataset",
                "examples": len(written), "errors": 0, "errors_file": c.ERRORS_FILE, "folds": folds,
                "classes": dict(sum(per_fold.values(), collections.Counter()))}
    with open(os.path.join(os.fspath(records_dir), c.MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


@pytest.fixture
def tone_records(tmp_path):
    """Factory: tone_records(per_fold, **kw) → records dir under tmp_path (see write_tone_records)."""
    counter = iter(range(1000))

    def make(per_fold, **kwargs):
        records_dir = tmp_path / f"records{next(counter)}"
        write_tone_records(records_dir, per_fold, **kwargs)
        return records_dir

    return make


@pytest.fixture(scope="session")
def tone_records_writer():
    """write_tone_records itself, for module-scoped fixtures."""
    return write_tone_records
# ------------------------------------------------------------------- end of training fixtures


# ---------------------------------------------------------------------------------------------
# Serving fixtures (tests/test_inference.py, test_package.py, test_server.py, test_client.py,
# test_deploy.py): one untrained `tiny` model exported once per session, and its model.tar.gz.
# Seeded, with unit normalisation statistics: its answers are far from one-hot (top ≈ 0.3–0.8).
# ---------------------------------------------------------------------------------------------
def _build_tiny_export(target):
    from cli.page_screenshot import example_export  # the listening page's picture shows this same model

    example_export(target / "export")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """EXPORT dir of an untrained tiny model: EXPORT/model/1/ (SavedModel) + EXPORT/metadata.json.
    Built once per test run (shared by the xdist workers): tests that change it copy it first."""
    return shared_dir.built_once(tmp_path_factory, "tiny-export", _build_tiny_export) / "export"


@pytest.fixture(scope="session")
def tiny_package(tiny_export, tmp_path_factory):
    """model.tar.gz of `tiny_export` in the SageMaker TF Serving layout (serving.package), built once per run."""
    from serving.package import write_package

    wheels = wheel_cache.container_wheels(tmp_path_factory)
    return shared_dir.built_once(tmp_path_factory, "tiny-package",
                                 lambda target: write_package(tiny_export, target / "model.tar.gz",
                                                              wheel_dir=wheels)) / "model.tar.gz"
# -------------------------------------------------------------------- end of serving fixtures
