"""urbansound8k: Beam ingestion → tf.data → Keras (in-graph log-mel) → SavedModel → endpoint."""
import os

from setuptools import find_packages, setup

# Versions verified to install together on Python 3.11 (pip check clean); the full
# resolved set is pinned in constraints.txt, which `make install` applies.
CORE = [
    # CPU wheel by default; GPU machines: `make install TF="tensorflow[and-cuda]==2.21.0"`.
    os.environ.get("US8K_TF_PACKAGE") or "tensorflow-cpu==2.21.0",
    "apache-beam==2.77.0",
    "google-crc32c==1.9.0",  # CRC for WriteToTFRecord (not crcmod)
    "protobuf==6.33.6",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
    "soundfile==0.14.0",
    "soxr==1.1.0",
    "av==18.1.0",  # newest PyAV with Python 3.11 wheels
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "prometheus_client==0.26.0",  # `us8k serve`: GET /metrics
    "psutil==7.2.2",
    "packaging==24.2",  # `us8k package`: wheel tags and Requires-Dist markers of the vendored wheels
    # Beam's S3 filesystem on the workers too: Beam's worker boot installs the staged sdist without
    # extras, and its SDK container has apache-beam[gcp] but not boto3 (Beam's `aws` extra: boto3 ≥ 1.9, < 2).
    "boto3==1.44.8",
]
# Beam's S3 filesystem locally (boto3 is also in CORE, for the Dataflow workers) and SageMaker.
AWS = ["apache-beam[aws]==2.77.0", "boto3==1.44.8", "sagemaker==2.257.7"]
# Beam's GCS filesystem and DataflowRunner (≈ 70 more packages, ≈ 320 MB; `make install` includes it).
GCP = ["apache-beam[gcp]==2.77.0"]
TEST = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "pytest-xdist==3.8.0",  # `make test` runs two workers
    "ruff==0.17.6",  # `make lint` (part of `make test`): ruff.toml
    "import-linter==2.16",  # `make lint`: the import layers in .importlinter
    "httpx==0.28.1",
    "librosa==0.11.0",  # parity tests and the seed-path benchmark only
    "moto[s3,server]==5.2.5",
    # tests/test_page.py: the listening page in Debian's /usr/bin/chromium (`make install` installs it;
    # no `playwright install`), and axe-core 4.12.1 (its axe.min.js, injected into the page).
    "playwright==1.65.2",
    "axe-playwright-python==0.1.8",
]

setup(
    name="urbansound8k",
    version="0.1.0",
    description="UrbanSound8K audio classification: Beam → TFRecord → tf.data → Keras → endpoint",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["beam", "beam.*", "tfdata", "tfdata.*", "models", "models.*",
                                    "serving", "serving.*", "cloud", "cloud.*", "cli", "cli.*",
                                    "benchmarks", "benchmarks.*"]),
    py_modules=["us8k"],
    package_data={"serving": ["static/*.html", "static/*.css", "static/*.js"]},  # `us8k serve`'s page
    install_requires=CORE,
    extras_require={"aws": AWS, "gcp": GCP, "test": TEST},
    entry_points={"console_scripts": ["us8k=cli:main"]},
)
