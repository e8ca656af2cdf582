"""`us8k deploy` / `undeploy` / `predict --endpoint-name` against a moto server on loopback.

Every AWS call must go through AWS_ENDPOINT_URL: with no internet here, one that went to AWS
itself would fail the test."""
import json
import urllib.request

import boto3
import botocore.exceptions
import pytest

import us8k

pytestmark = pytest.mark.timeout(180)

REGION = "us-east-1"
BUCKET = "us8k-models"
ROLE = "arn:aws:iam::123456789012:role/us8k-sagemaker"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            env.delenv(name, raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


def sagemaker():
    return boto3.client("sagemaker")


def test_deploy_creates_model_config_and_endpoint(moto_url, tiny_package, capsys):
    assert us8k.main(["deploy", str(tiny_package), "--bucket", BUCKET, "--role", ROLE, "--name", "us8k-test"]) == 0
    out = capsys.readouterr().out
    assert "endpoint us8k-test is" in out and "us8k predict clip.wav --endpoint-name us8k-test" in out
    key = "us8k/us8k-test/model.tar.gz"
    stored = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == tiny_package.read_bytes()
    model = sagemaker().describe_model(ModelName="us8k-test")
    container = model["PrimaryContainer"]
    assert container["Image"] == f"763104351884.dkr.ecr.{REGION}.amazonaws.com/tensorflow-inference:2.19-cpu"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{key}"
    assert model["ExecutionRoleArn"] == ROLE
    config = sagemaker().describe_endpoint_config(EndpointConfigName="us8k-test")
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == "us8k-test" and variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 1
    endpoint = sagemaker().describe_endpoint(EndpointName="us8k-test")
    assert endpoint["EndpointConfigName"] == "us8k-test"
    assert endpoint["EndpointStatus"] in ("Creating", "InService")


def test_deploy_options_reach_the_resources(moto_url, tiny_package):
    assert us8k.main(["deploy", str(tiny_package), "--bucket", BUCKET, "--role", ROLE, "--name", "us8k-options",
                      "--instance-type", "ml.c5.xlarge", "--framework-version", "2.18", "--threshold", "0.75",
                      "--region", REGION, "--wait"]) == 0
    container = sagemaker().describe_model(ModelName="us8k-options")["PrimaryContainer"]
    assert container["Image"].endswith("/tensorflow-inference:2.18-cpu")
    assert container["Environment"]["US8K_THRESHOLD"] == "0.75"
    variant = sagemaker().describe_endpoint_config(EndpointConfigName="us8k-options")["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.c5.xlarge"
    assert sagemaker().describe_endpoint(EndpointName="us8k-options")["EndpointStatus"] == "InService"


def test_predict_through_sagemaker_runtime(moto_url, tiny_package, tmp_path, capsys):
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
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-test", "--threshold", "0.7"]) == 0
    assert capsys.readouterr().out == f"{clip}\tsiren\t0.930\n"
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(clip), **queued}
    # the queue is empty: moto answers its placeholder bytes, which the client reports
    assert us8k.main(["predict", str(clip), "--endpoint-name", "us8k-test", "--windows"]) == 1
    assert "endpoint 'us8k-test' answered with something that is not JSON: b'body'" in capsys.readouterr().err


def test_undeploy_removes_endpoint_config_and_model(moto_url, capsys):
    for name in ("us8k-test", "us8k-options"):
        assert us8k.main(["undeploy", "--name", name]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [f"us8k undeploy: deleted endpoint {name}", f"us8k undeploy: deleted endpoint config {name}",
                       f"us8k undeploy: deleted model {name}"]
        for call, kwargs in [(sagemaker().describe_endpoint, {"EndpointName": name}),
                             (sagemaker().describe_endpoint_config, {"EndpointConfigName": name}),
                             (sagemaker().describe_model, {"ModelName": name})]:
            with pytest.raises(botocore.exceptions.ClientError):
                call(**kwargs)
    with pytest.raises(SystemExit, match="no endpoint, endpoint config or model named 'us8k-test'"):
        us8k.main(["undeploy", "--name", "us8k-test"])


def test_deploy_errors_are_one_line(moto_url, tiny_package, tmp_path):
    with pytest.raises(SystemExit, match="us8k deploy: error: model archive not found"):
        us8k.main(["deploy", str(tmp_path / "none.tar.gz"), "--bucket", BUCKET, "--role", ROLE])
    with pytest.raises(SystemExit, match="us8k deploy: error: invalid name 'bad_name!'"):
        us8k.main(["deploy", str(tiny_package), "--bucket", BUCKET, "--role", ROLE, "--name", "bad_name!"])
    with pytest.raises(SystemExit, match=r"us8k deploy: error: uploading .* to s3://no-such-bucket-here/.* failed"):
        us8k.main(["deploy", str(tiny_package), "--bucket", "no-such-bucket-here", "--role", ROLE, "--name", "x1"])
    with pytest.raises(botocore.exceptions.ClientError):
        sagemaker().describe_endpoint(EndpointName="x1")  # nothing was created after the failed upload
