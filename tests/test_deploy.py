"""`us8k deploy` / `deploy --rollback` / `undeploy` / `predict --endpoint-name` against a moto server on
loopback (moto_sagemaker: moto 5.2.5 plus the SageMaker behaviour it lacks), and the failures a
deploy meets in the cloud: a step refused half-way (what it made is removed), an endpoint busy
updating, an endpoint that fails while waited on, a rollback whose model is gone.

Every AWS call must go through AWS_ENDPOINT_URL: with no internet here, one that went to AWS
itself would fail the test. The resources are read back with boto3 over HTTP after each step."""
import io
import json
import re
import tarfile
import urllib.request

import boto3
import botocore.exceptions
import moto_sagemaker
import pytest
from cli_failure import failure

import us8k
from serving.deploy import ENDPOINT_TAG, MAX_NAME_LENGTH, DeployConfig, DeployError
from serving.deploy import deploy as deploy_now
from serving.inference import MAX_REQUEST_WINDOWS, THRESHOLD_ENV
from tfdata.layout import (
    GUNICORN_TIMEOUT_ENV,
    GUNICORN_WORKERS_ENV,
    TFS_BATCH_TIMEOUT_ENV,
    TFS_ENABLE_BATCHING_ENV,
    TFS_MAX_BATCH_SIZE_ENV,
)

pytestmark = pytest.mark.timeout(300)

REGION = "us-east-1"
BUCKET = "us8k-models"
ROLE = "arn:aws:iam::123456789012:role/us8k-sagemaker"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/tensorflow-inference:2.19-cpu"
DEFAULT_ENV = {TFS_ENABLE_BATCHING_ENV: "true", TFS_MAX_BATCH_SIZE_ENV: str(MAX_REQUEST_WINDOWS),
               TFS_BATCH_TIMEOUT_ENV: "5000", GUNICORN_WORKERS_ENV: "2", GUNICORN_TIMEOUT_ENV: "60"}


@pytest.fixture(scope="module")
def moto_url():
    with moto_sagemaker.emulated_aws(REGION, BUCKET) as url:
        yield url


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    """What the tests that count resources deploy: all `us8k deploy` reads of an archive (the CPython
    its vendored extension modules are built for, 3.12) and no model, which the emulator never runs;
    a quicker upload than tiny_package's 17 MB (whose deploy and bytes the first tests check)."""
    path = tmp_path_factory.mktemp("small") / "model.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("code/inference.py", "code/lib/_cffi_backend.cpython-312-x86_64-linux-gnu.so"):
            archive.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return path


def sagemaker():
    return boto3.client("sagemaker")


def deploy(package, name, *options):
    return us8k.main(["deploy", str(package), "--bucket", BUCKET, "--role", ROLE, "--name", name, *options])


def versions(prefix):
    """Every model and endpoint config whose name starts with `prefix`, as the emulator holds them."""
    models = sorted(m["ModelName"] for m in sagemaker().list_models()["Models"] if m["ModelName"].startswith(prefix))
    listed = sagemaker().list_endpoint_configs(MaxResults=100)["EndpointConfigs"]
    configs = sorted(c["EndpointConfigName"] for c in listed if c["EndpointConfigName"].startswith(prefix))
    return models, configs


def archives(prefix):
    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def current_config(name):
    return sagemaker().describe_endpoint(EndpointName=name)["EndpointConfigName"]


def environment(model_name):
    return sagemaker().describe_model(ModelName=model_name)["PrimaryContainer"]["Environment"]


def test_deploy_creates_model_config_and_endpoint(moto_url, tiny_package, capsys):
    assert deploy(tiny_package, "us8k-test") == 0
    out = capsys.readouterr().out
    assert "endpoint us8k-test created" in out and "us8k predict clip.wav --endpoint-name us8k-test" in out
    assert "us8k deploy --rollback us8k-test" in out and "us8k undeploy --name us8k-test" in out
    (model_name,), (config_name,) = versions("us8k-test")
    assert re.fullmatch(r"us8k-test-\d{8}-\d{6}-\d{6}", model_name) and config_name == model_name
    (key,) = archives("us8k/us8k-test/")
    assert key == f"us8k/us8k-test/{model_name.removeprefix('us8k-test-')}/model.tar.gz"
    assert boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read() == tiny_package.read_bytes()
    model = sagemaker().describe_model(ModelName=model_name)
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"] == f"s3://{BUCKET}/{key}"
    assert container["Environment"] == DEFAULT_ENV
    assert model["ExecutionRoleArn"] == ROLE
    (variant,) = sagemaker().describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    assert variant["ModelName"] == model_name and variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 1
    endpoint = sagemaker().describe_endpoint(EndpointName="us8k-test")
    assert endpoint["EndpointConfigName"] == config_name and endpoint["EndpointStatus"] in ("Creating", "InService")
    for arn in (model["ModelArn"], endpoint["EndpointArn"],
                sagemaker().describe_endpoint_config(EndpointConfigName=config_name)["EndpointConfigArn"]):
        assert {"Key": ENDPOINT_TAG, "Value": "us8k-test"} in sagemaker().list_tags(ResourceArn=arn)["Tags"]


def test_deploy_options_reach_the_resources(moto_url, tiny_package):
    assert deploy(tiny_package, "us8k-options", "--instance-type", "ml.c5.xlarge", "--instance-count", "2",
                  "--framework-version", "2.18", "--threshold", "0.75", "--max-batch", "64",
                  "--batch-timeout-ms", "2.5", "--workers", "3", "--region", REGION, "--wait") == 0
    (model_name,), (config_name,) = versions("us8k-options")
    container = sagemaker().describe_model(ModelName=model_name)["PrimaryContainer"]
    assert container["Image"].endswith("/tensorflow-inference:2.18-cpu")
    assert container["Environment"] == {TFS_ENABLE_BATCHING_ENV: "true", TFS_MAX_BATCH_SIZE_ENV: "64",
                                        TFS_BATCH_TIMEOUT_ENV: "2500", GUNICORN_WORKERS_ENV: "3",
                                        GUNICORN_TIMEOUT_ENV: "60", THRESHOLD_ENV: "0.75"}
    (variant,) = sagemaker().describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c5.xlarge" and variant["InitialInstanceCount"] == 2
    assert sagemaker().describe_endpoint(EndpointName="us8k-options")["EndpointStatus"] == "InService"


def test_update_rollback_undeploy_account_for_every_resource(moto_url, small_archive, capsys):
    name = "us8k-live"
    assert deploy(small_archive, name, "--max-batch", "0") == 0  # v1: batching off
    created = sagemaker().describe_endpoint(EndpointName=name)
    (v1,), _ = versions(name)
    assert environment(v1) == {TFS_ENABLE_BATCHING_ENV: "false", GUNICORN_WORKERS_ENV: "2", GUNICORN_TIMEOUT_ENV: "60"}
    capsys.readouterr()

    assert deploy(small_archive, name, "--max-batch", "32", "--workers", "4", "--wait") == 0  # v2: an update
    out = capsys.readouterr().out
    (_, v2), configs = versions(name)
    assert configs == [v1, v2] and v2 > v1
    assert f"endpoint {name} updated: InService on {v2} (was {v1}, kept)" in out
    assert f"updating endpoint {name} from {v1} to {v2}" in out
    updated = sagemaker().describe_endpoint(EndpointName=name)
    assert updated["EndpointConfigName"] == v2 and updated["EndpointStatus"] == "InService"
    assert updated["EndpointArn"] == created["EndpointArn"] and updated["CreationTime"] == created["CreationTime"]
    assert environment(v2)[TFS_MAX_BATCH_SIZE_ENV] == "32" and environment(v2)[GUNICORN_WORKERS_ENV] == "4"
    assert environment(v1)[TFS_ENABLE_BATCHING_ENV] == "false"  # the old model is kept as it was
    (variant,) = sagemaker().describe_endpoint_config(EndpointConfigName=v2)["ProductionVariants"]
    assert variant["ModelName"] == v2
    assert len(archives(f"us8k/{name}/")) == 2  # each version keeps its own archive

    assert us8k.main(["deploy", "--rollback", name]) == 0
    assert f"endpoint {name} rolled back: InService on {v1} (was {v2}, kept)" in capsys.readouterr().out
    assert current_config(name) == v1 and versions(name) == ([v1, v2], [v1, v2])
    assert re.search(f"us8k deploy: error: endpoint '{name}' runs its oldest config",
                     failure(["deploy", "--rollback", name]))

    assert deploy(small_archive, name, "--threshold", "0.9") == 0  # v3, from v1
    (_, _, v3), _ = versions(name)
    assert current_config(name) == v3 and environment(v3)[THRESHOLD_ENV] == "0.9"
    assert us8k.main(["deploy", "--rollback", name]) == 0  # one step back in deploy order: v2
    assert current_config(name) == v2
    capsys.readouterr()

    assert us8k.main(["undeploy", "--name", name]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:5] == [f"us8k undeploy: deleted endpoint {name}", f"us8k undeploy: deleted endpoint config {v2}",
                        f"us8k undeploy: deleted endpoint config {v1}", f"us8k undeploy: deleted endpoint config {v3}"]
    assert out[5:8] == [f"us8k undeploy: deleted model {v}" for v in (v1, v2, v3)]
    assert out[8:] == [f"us8k undeploy: kept s3://{BUCKET}/{key}" for key in archives(f"us8k/{name}/")]
    assert versions(name) == ([], [])
    with pytest.raises(botocore.exceptions.ClientError):
        sagemaker().describe_endpoint(EndpointName=name)
    assert len(archives(f"us8k/{name}/")) == 3  # kept by default


def test_undeploy_leaves_other_endpoints_and_can_delete_archives(moto_url, small_archive, capsys):
    assert deploy(small_archive, "us8k-a") == 0
    assert deploy(small_archive, "us8k-a-b") == 0  # its names contain "us8k-a"
    assert deploy(small_archive, "us8k-a") == 0
    others = versions("us8k-a-b")
    capsys.readouterr()
    assert us8k.main(["undeploy", "--name", "us8k-a", "--delete-archives"]) == 0
    out = capsys.readouterr().out
    assert out.count("us8k undeploy: deleted model us8k-a-2") == 2 and out.count(f"deleted s3://{BUCKET}/") == 2
    assert versions("us8k-a") == others and versions("us8k-a-b") == others
    assert archives("us8k/us8k-a/") == [] and len(archives("us8k/us8k-a-b/")) == 1
    assert current_config("us8k-a-b") == others[1][0]
    assert us8k.main(["undeploy", "--name", "us8k-a-b", "--delete-archives"]) == 0
    assert versions("us8k-a") == ([], []) and archives("us8k/us8k-a") == []


def test_predict_through_sagemaker_runtime(moto_url, small_archive, tmp_path, capsys):
    assert deploy(small_archive, "us8k-predict") == 0
    queued = {"predictions": [{"label": "siren", "confidence": 0.93, "undetermined": False,
                               "probabilities": {"siren": 0.93, "dog_bark": 0.07}}]}
    results = [{"Body": json.dumps(queued), "ContentType": "application/json"}] * 2  # one per distinct request
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results", method="POST",
        data=json.dumps({"region": REGION, "results": results}).encode(),
        headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=30).status == 201
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF-bytes-the-emulator-does-not-decode")
    capsys.readouterr()
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-predict", "--threshold", "0.7"]) == 0
    assert capsys.readouterr().out == f"{clip}\tsiren\t0.930\n"
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-predict", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(clip), **queued}
    # the queue is empty: moto answers its placeholder bytes, which the client reports
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-predict", "--windows"]) == 1
    assert "endpoint 'us8k-predict' answered with something that is not JSON: b'body'" in capsys.readouterr().err


def test_undeploy_removes_what_deploy_made(moto_url, capsys):
    for name in ("us8k-test", "us8k-options", "us8k-predict"):
        (model,), (config,) = versions(name + "-")
        assert us8k.main(["undeploy", "--name", name]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1:4] == [f"us8k undeploy: deleted endpoint {name}",
                            f"us8k undeploy: deleted endpoint config {config}", f"us8k undeploy: deleted model {model}"]
        assert versions(name + "-") == ([], [])
        with pytest.raises(botocore.exceptions.ClientError):
            sagemaker().describe_endpoint(EndpointName=name)
    assert re.search("no endpoint, endpoint config or model named 'us8k-test'",
                     failure(["undeploy", "--name", "us8k-test"]))
    assert sagemaker().list_endpoints()["Endpoints"] == []
    assert [m["ModelName"] for m in sagemaker().list_models()["Models"]] == []
    assert sagemaker().list_endpoint_configs()["EndpointConfigs"] == []


def test_undeploy_cleans_an_endpoint_made_elsewhere(moto_url, tiny_package, capsys):
    """An endpoint, config and model all named alike (as older deploys and other tools make them)."""
    client = sagemaker()
    client.create_model(ModelName="legacy", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    client.create_endpoint_config(EndpointConfigName="legacy", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "legacy", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    client.create_endpoint(EndpointName="legacy", EndpointConfigName="legacy")
    assert re.search("runs config 'legacy', which `us8k deploy` did not make",
                     failure(["deploy", "--rollback", "legacy"]))
    assert us8k.main(["undeploy", "--name", "legacy"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "us8k undeploy: deleted endpoint legacy", "us8k undeploy: deleted endpoint config legacy",
        "us8k undeploy: deleted model legacy"]


def test_deploy_errors_are_one_line(moto_url, tiny_package, tmp_path):
    def error(*argv, match):
        refused = failure(["deploy", *argv])
        assert re.search(match, refused)
        assert refused.startswith("us8k deploy: error: ") and "\n" not in refused

    base = ["--bucket", BUCKET, "--role", ROLE]
    error(str(tmp_path / "none.tar.gz"), *base, match="model archive not found")
    error(str(tiny_package), *base, "--name", "bad_name!", match="invalid name 'bad_name!'")
    error(str(tiny_package), *base, "--name", "n" * (MAX_NAME_LENGTH + 1), match="invalid name")
    error(str(tiny_package), "--role", ROLE, match="deploying needs --bucket")
    error(match="deploying needs MODEL_TAR_GZ, --bucket, --role")
    error(str(tiny_package), "--rollback", "x", match="--rollback NAME takes no MODEL_TAR_GZ")
    error("--rollback", "nothing-here", match="no endpoint named 'nothing-here'")
    error(str(tiny_package), *base, "--max-batch", "-1", match="--max-batch must be ≥ 0")
    error(str(tiny_package), *base, "--workers", "0", match="--workers must be ≥ 1")
    error(str(tiny_package), *base, "--threshold", "2", match="--threshold must be in")
    wrong_python = tmp_path / "py311.tar.gz"
    with tarfile.open(wrong_python, "w:gz") as archive:
        info = tarfile.TarInfo("code/lib/_cffi_backend.cpython-311-x86_64-linux-gnu.so")
        archive.addfile(info, io.BytesIO(b""))
    error(str(wrong_python), *base, match="vendors wheels for CPython 3.11, the TF Serving 2.19 image runs 3.12")
    error(str(tiny_package), "--bucket", "no-such-bucket-here", "--role", ROLE, "--name", "x1",
          match=r"uploading .* to s3://no-such-bucket-here/.* failed")
    with pytest.raises(botocore.exceptions.ClientError):
        sagemaker().describe_endpoint(EndpointName="x1")  # nothing was created after the failed upload
    assert versions("x1") == ([], [])


# ---------------------------------------------------------------- failures in the cloud


def test_a_refused_endpoint_config_leaves_no_model_behind(moto_url, small_archive):
    """CreateEndpointConfig refuses the instance type (AWS's enum check) after the model was made:
    the model is deleted again, and nothing is left for a later rollback to find."""
    refused = failure(["deploy", str(small_archive), "--bucket", BUCKET, "--role", ROLE, "--name", "us8k-badtype",
                       "--instance-type", "ml.nonesuch.xlarge"])
    assert re.search(r"us8k deploy: error: creating endpoint 'us8k-badtype' failed: .*"
                     r"ValidationException.*instanceType", refused)
    assert versions("us8k-badtype") == ([], [])
    with pytest.raises(botocore.exceptions.ClientError):
        sagemaker().describe_endpoint(EndpointName="us8k-badtype")


def test_a_refused_create_endpoint_removes_its_model_and_config(moto_url, small_archive):
    """Another tool creates an endpoint of the same name while the deploy runs: CreateEndpoint is
    refused (the name is taken), the deploy's new config and model are deleted, and the other
    endpoint is left as it was."""
    client = sagemaker()
    client.create_model(ModelName="elsewhere", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    client.create_endpoint_config(EndpointConfigName="elsewhere", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "elsewhere", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 1}])

    def meanwhile(message):  # the deploy's log line just before it calls CreateEndpoint
        if message.startswith("creating endpoint us8k-race "):
            client.create_endpoint(EndpointName="us8k-race", EndpointConfigName="elsewhere")

    with pytest.raises(DeployError, match=r"creating endpoint 'us8k-race' failed: .*already existing endpoint"):
        deploy_now(small_archive, DeployConfig(bucket=BUCKET, role=ROLE, name="us8k-race"), log=meanwhile)
    assert versions("us8k-race") == ([], [])  # its model and config were removed
    assert current_config("us8k-race") == "elsewhere"
    assert [m["ModelName"] for m in client.list_models()["Models"] if m["ModelName"].startswith("elsewhere")] \
        == ["elsewhere"]
    client.delete_endpoint(EndpointName="us8k-race")
    client.delete_endpoint_config(EndpointConfigName="elsewhere")
    client.delete_model(ModelName="elsewhere")


def test_deploy_and_rollback_refuse_an_endpoint_that_is_updating(moto_url, small_archive):
    name = "us8k-busy"
    assert deploy(small_archive, name) == 0
    assert deploy(small_archive, name) == 0
    before = versions(name)
    moto_sagemaker.set_endpoint_status(REGION, name, "Updating")  # another update is under way
    assert re.search(f"us8k deploy: error: endpoint '{name}' is Updating: wait until it is InService, then deploy",
                     failure(["deploy", str(small_archive), "--bucket", BUCKET, "--role", ROLE, "--name", name]))
    assert re.search(f"us8k deploy: error: endpoint '{name}' is Updating: wait until it is InService",
                     failure(["deploy", "--rollback", name]))
    assert versions(name) == before and current_config(name) == before[1][1]  # nothing made, nothing moved
    assert len(archives(f"us8k/{name}/")) == 2  # not even uploaded
    moto_sagemaker.set_endpoint_status(REGION, name, "InService")
    assert us8k.main(["undeploy", "--name", name]) == 0


def test_an_endpoint_that_fails_while_waited_on_is_an_error_with_the_reason(moto_url, small_archive):
    """The archive disappears from S3 between the upload and CreateEndpoint: SageMaker cannot
    download it and the endpoint fails; `--wait` reports that, with SageMaker's reason."""
    name = "us8k-fails"

    def meanwhile(message):
        if message.startswith(f"creating endpoint {name} "):
            for key in archives(f"us8k/{name}/"):
                boto3.client("s3").delete_object(Bucket=BUCKET, Key=key)

    with pytest.raises(DeployError, match=f"endpoint '{name}' did not come into service: Failed to download "
                                          f"model data .*s3://{BUCKET}/us8k/{name}/"):
        deploy_now(small_archive, DeployConfig(bucket=BUCKET, role=ROLE, name=name, wait=True), log=meanwhile)
    assert sagemaker().describe_endpoint(EndpointName=name)["EndpointStatus"] == "Failed"
    assert us8k.main(["undeploy", "--name", name]) == 0


def test_rollback_to_a_config_whose_model_was_deleted_is_refused(moto_url, small_archive):
    name = "us8k-orphan"
    assert deploy(small_archive, name) == 0
    assert deploy(small_archive, name) == 0
    (v1, v2), _ = versions(name)
    sagemaker().delete_model(ModelName=v1)
    assert re.search(f"us8k deploy: error: config '{v1}' serves model '{v1}', which no longer exists",
                     failure(["deploy", "--rollback", name]))
    assert current_config(name) == v2  # still serving the model it had
    assert us8k.main(["undeploy", "--name", name]) == 0
