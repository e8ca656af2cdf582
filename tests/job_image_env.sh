#!/usr/bin/env bash
# tests/job_image_env.sh DIR — a Python 3.11 venv at DIR with the Python packages of SageMaker's
# TensorFlow 2.19 GPU training image that the training job runs on, to run the job's code against them:
#   US8K_JOB_PYTHON=$PWD/DIR/bin/python .venv/bin/python -m pytest -q tests/test_job_entry.py tests/test_multiworker.py
#   (an absolute path: the toolkit starts the job in its own directory tree)
#
# What the image has (aws/deep-learning-containers, branch master at f06ada0e, files last changed in
# 9ce8911c: tensorflow/training/docker/2.19/py3/cu125/Dockerfile.gpu, target "sagemaker"):
#   tensorflow 2.19.0 (the GPU wheel), numpy==1.26.4 (pinned, and pinned again after every other
#   install), keras 3.10.0 (not pinned in the Dockerfile: the version its scan allowlist records in
#   site-packages), protobuf < 6 (TensorFlow 2.19's cap), sagemaker-training and
#   sagemaker-tensorflow-training installed unpinned, scipy, requests, boto3 (awscli<2, sagemaker),
#   psutil, paramiko, scikit-learn and pandas (sagemaker-tensorflow-training), matplotlib (seaborn).
# Deviations from the image, on purpose:
#   - tensorflow-cpu 2.19.0, not the GPU wheel: these machines have no GPU. Same `tensorflow` module.
#   - CPython 3.11 (this machine's), not the image's 3.12.11; PYTHON=python3.12 builds the same set
#     on 3.12 (checked with 3.12.1).
#   - Only the packages the job's code or the toolkit's start-up path import; none of tf-models,
#     tensorflow-io, tensorflow-datasets, opencv, pandas, gevent (the last two are in the toolkit's
#     requirements, but its training entry does not import them).
#   - The toolkit pair is installed with --no-deps: sagemaker-tensorflow-training 20.5.0 pins
#     numpy<1.24 and sagemaker-training<=4.8.3, and sagemaker-training 4.8.3 pins protobuf<=3.20.3;
#     the image runs them with numpy 1.26.4 and protobuf 5.x too, so `pip check` reports exactly these
#     (plus pandas and gevent missing). With protobuf 5 the toolkit's RecordIO encoder
#     (sagemaker_training.recordio/encoders) cannot be imported; the training entry does not use it.
#   - sagemaker-training builds a small C extension (gethostname): gcc is needed.
# Other versions below: those of this project's constraints.txt where they accept numpy 1.26.4,
# otherwise what pip resolved with the pins above (every one is pinned; step 4 checks that).
# Skips everything when DIR/.built exists. Prints one line per step.
set -euo pipefail

DIR=${1:?usage: tests/job_image_env.sh DIR}
PYTHON=${PYTHON:-python3.11}

if [ -e "$DIR/.built" ]; then
    echo "job image env: $DIR already built (remove $DIR/.built to rebuild)"
    exit 0
fi
# A half-built DIR of this script is started over; anything else there is left alone.
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -e "$DIR/base-pins.txt" ]; then
    echo "job image env: $DIR exists and is not one of this script's venvs: choose another DIR" >&2
    exit 1
fi

# The image's Python packages that matter (with their dependencies, all pinned).
BASE_PINS="
tensorflow-cpu==2.19.0
keras==3.10.0
numpy==1.26.4
protobuf==5.29.6
ml_dtypes==0.5.4
h5py==3.14.0
tensorboard==2.19.0
tensorboard-data-server==0.7.2
tensorflow-io-gcs-filesystem==0.37.1
absl-py==2.5.1
astunparse==1.6.3
wheel==0.48.0
flatbuffers==25.12.19
gast==0.7.0
google-pasta==0.2.0
grpcio==1.85.3
libclang==18.1.1
opt_einsum==3.4.0
termcolor==3.3.0
typing_extensions==4.16.0
wrapt==2.5.2
packaging==26.4
six==1.17.0
Markdown==3.11.3
MarkupSafe==3.0.4
Werkzeug==3.1.9
namex==0.1.0
optree==0.20.0
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
scipy==1.17.1
scikit-learn==1.9.1
joblib==1.6.0
threadpoolctl==3.8.0
narwhals==2.29.0
matplotlib==3.11.2
contourpy==1.3.3
cycler==0.12.1
fonttools==4.68.0
kiwisolver==1.5.1
pillow==12.3.0
pyparsing==3.3.3
python-dateutil==2.9.0.post0
boto3==1.44.8
botocore==1.44.8
s3transfer==0.19.3
jmespath==1.1.0
urllib3==2.8.0
requests==2.34.2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.21
psutil==7.2.2
cryptography==50.0.2
cffi==2.1.1
pycparser==3.12
invoke==3.0.3
cloudpickle==3.1.3
"
# SageMaker's training toolkit and what its start-up path imports, without their declared dependencies.
TOOLKIT_PINS="
sagemaker-training==4.8.3
sagemaker-tensorflow-training==20.5.0
retrying==1.4.2
paramiko==5.1.0
bcrypt==5.0.0
PyNaCl==1.6.2
inotify_simple==1.2.1
"

start=$(date +%s)
step() { echo "job image env: [$(( $(date +%s) - start ))s] $*"; }

step "1/6 venv $DIR ($("$PYTHON" --version 2>&1))"
rm -rf "$DIR"
mkdir -p "$DIR"
echo "$BASE_PINS" | grep = > "$DIR/base-pins.txt"  # first: it marks DIR as this script's
echo "$TOOLKIT_PINS" | grep = > "$DIR/toolkit-pins.txt"
printf '*\n' > "$DIR/.gitignore"  # nothing in it belongs in git
"$PYTHON" -m venv "$DIR"
PIP=("$DIR/bin/python" -m pip --disable-pip-version-check -q)

step "2/6 TensorFlow 2.19 (CPU wheel), Keras 3.10, numpy 1.26.4 and the rest ($(echo "$BASE_PINS" | grep -c =) pins)"
"${PIP[@]}" install -r "$DIR/base-pins.txt"

step "3/6 SageMaker training toolkit, --no-deps ($(echo "$TOOLKIT_PINS" | grep -c =) pins; builds a C extension)"
"${PIP[@]}" install --no-deps -r "$DIR/toolkit-pins.txt"

step "4/6 every installed package is pinned above, at its pinned version"
"${PIP[@]}" freeze --all --exclude pip --exclude setuptools > "$DIR/freeze.txt"
"$DIR/bin/python" - "$DIR" <<'EOF'
import re, sys
from pathlib import Path
d = Path(sys.argv[1])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def pins(name):
    return {norm(a): b for a, b in (l.strip().split("==") for l in (d / name).read_text().splitlines() if "==" in l)}
want = {**pins("base-pins.txt"), **pins("toolkit-pins.txt")}
have = pins("freeze.txt")
extra = sorted(set(have) - set(want))
wrong = sorted(f"{n} {have[n]} (pinned {want[n]})" for n in set(have) & set(want) if have[n] != want[n])
missing = sorted(set(want) - set(have))
if extra or wrong or missing:
    sys.exit(f"job image env: unpinned {extra}, other versions {wrong}, missing {missing}")
EOF

step "5/6 pip check (expected: the toolkit's own pins numpy<1.24 and protobuf<=3.20.3, pandas and gevent missing)"
"$DIR/bin/python" -m pip --disable-pip-version-check check > "$DIR/pip-check.txt" 2>&1 || true  # not -q: it hides the report
sed 's/^/    /' "$DIR/pip-check.txt"
grep -q sagemaker-training "$DIR/pip-check.txt" || { echo "job image env: pip check said nothing about the toolkit's pins" >&2; exit 1; }
unexpected=$(grep -v -E '^sagemaker-(tensorflow-)?training [0-9.]+ (requires (pandas|gevent), which is not installed|has requirement (numpy<1\.24|protobuf<=3\.20\.3,>=3\.9\.2), but you have)' "$DIR/pip-check.txt" || true)
if [ -n "$unexpected" ]; then
    echo "job image env: pip check reports more than the toolkit's own pins:" >&2
    echo "$unexpected" >&2
    exit 1
fi

step "6/6 imports: the toolkit's training entry, TensorFlow, Keras, numpy"
TF_CPP_MIN_LOG_LEVEL=2 "$DIR/bin/python" -c '
import sagemaker_tensorflow_container.training, sagemaker_training.mpi, gethostname
import tensorflow as tf, keras, numpy, google.protobuf, sklearn, scipy, matplotlib
print(f"job image env:        tensorflow {tf.__version__}, keras {keras.__version__}, numpy {numpy.__version__}, "
      f"protobuf {google.protobuf.__version__}, scikit-learn {sklearn.__version__}, scipy {scipy.__version__}")'
touch "$DIR/.built"
step "done: US8K_JOB_PYTHON=$(cd "$DIR" && pwd)/bin/python"
