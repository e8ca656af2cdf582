"""`us8k undeploy --name N`: delete a SageMaker endpoint, its endpoint config and its model(s).

The config and model names are read from the endpoint itself (so endpoints not made by
`us8k deploy` are cleaned up too); when the endpoint is already gone, a config and a model named N
are still removed. Every call honours AWS_ENDPOINT_URL / AWS_DEFAULT_REGION / credentials.
The uploaded model.tar.gz stays in S3.
"""
from __future__ import annotations

from serving.deploy import DeployError, boto_session


def _missing(exc) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "not find" in error.get("Message", "").lower() or "not exist" in error.get("Message", "").lower())


def undeploy(name: str, region: str | None = None) -> list[str]:
    """Delete endpoint `name`, its config and models; returns what was deleted ("kind name")."""
    import botocore.exceptions

    client = boto_session(region).client("sagemaker")
    deleted: list[str] = []
    config_name, model_names = name, [name]
    try:
        config_name = client.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        client.delete_endpoint(EndpointName=name)
        deleted.append(f"endpoint {name}")
    except botocore.exceptions.ClientError as exc:
        if not _missing(exc):
            raise DeployError(f"deleting endpoint {name!r} failed: {exc}") from None
    try:
        variants = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
        model_names = list(dict.fromkeys(v["ModelName"] for v in variants))
        client.delete_endpoint_config(EndpointConfigName=config_name)
        deleted.append(f"endpoint config {config_name}")
    except botocore.exceptions.ClientError as exc:
        if not _missing(exc):
            raise DeployError(f"deleting endpoint config {config_name!r} failed: {exc}") from None
    for model_name in model_names:
        try:
            client.describe_model(ModelName=model_name)
            client.delete_model(ModelName=model_name)
            deleted.append(f"model {model_name}")
        except botocore.exceptions.ClientError as exc:
            if not _missing(exc):
                raise DeployError(f"deleting model {model_name!r} failed: {exc}") from None
    return deleted


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the endpoint's name (as given to `us8k deploy`)")
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")


def run(args) -> int:
    try:
        deleted = undeploy(args.name, args.region)
    except DeployError as exc:
        raise SystemExit(f"us8k undeploy: error: {exc}") from None
    if not deleted:
        raise SystemExit(f"us8k undeploy: error: no endpoint, endpoint config or model named {args.name!r}")
    for item in deleted:
        print(f"us8k undeploy: deleted {item}")
    return 0
