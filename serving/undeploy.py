"""`us8k undeploy --name N`: delete a SageMaker endpoint and every endpoint config and model made for it.

What goes: the endpoint N; every endpoint config and model `us8k deploy` made for it (named
N-<stamp>, tagged us8k:endpoint=N: the current one and those kept for rollback); the config the
endpoint runs and its models even when they are not ours (an endpoint made by other tools); and a
config and a model named N (older deploys named all three alike). The uploaded archives stay in S3
(their s3:// URLs are printed) unless --delete-archives is given. Every call honours
AWS_ENDPOINT_URL / AWS_DEFAULT_REGION / credentials.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cloud.aws import AwsError, boto_session, is_missing
from serving.deploy import DeployError, owned_versions


@dataclass
class Removal:
    deleted: list[str] = field(default_factory=list)  # "kind name", in deletion order
    archives: list[str] = field(default_factory=list)  # s3:// URLs of the deleted models' archives
    archives_deleted: bool = False


def undeploy(name: str, region: str | None = None, delete_archives: bool = False) -> Removal:
    """Delete endpoint `name`, its configs and models (see the module doc); say what went."""
    import botocore.exceptions

    session = boto_session(region)
    client = session.client("sagemaker")
    removal = Removal()

    def attempt(kind: str, resource: str, call) -> bool:
        try:
            call()
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return False
            raise DeployError(f"deleting {kind} {resource!r} failed: {exc}") from None
        removal.deleted.append(f"{kind} {resource}")
        return True

    try:
        configs, models = owned_versions(client, name)
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"listing the configs and models of {name!r} failed: {exc}") from None
    current: list[str] = []
    try:
        current = [client.describe_endpoint(EndpointName=name)["EndpointConfigName"]]
    except botocore.exceptions.ClientError as exc:
        if not is_missing(exc):
            raise DeployError(f"describing endpoint {name!r} failed: {exc}") from None
    if current:
        attempt("endpoint", name, lambda: client.delete_endpoint(EndpointName=name))
    model_names = list(models)
    for config in dict.fromkeys(current + configs + [name]):
        try:
            variants = client.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                continue
            raise DeployError(f"describing endpoint config {config!r} failed: {exc}") from None
        model_names += [variant["ModelName"] for variant in variants]
        attempt("endpoint config", config, lambda c=config: client.delete_endpoint_config(EndpointConfigName=c))
    for model in dict.fromkeys(model_names + [name]):
        try:
            container = client.describe_model(ModelName=model).get("PrimaryContainer", {})
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                continue
            raise DeployError(f"describing model {model!r} failed: {exc}") from None
        if attempt("model", model, lambda m=model: client.delete_model(ModelName=m)) and container.get("ModelDataUrl"):
            removal.archives.append(container["ModelDataUrl"])
    if delete_archives and removal.archives:
        s3 = session.client("s3")
        for url in removal.archives:
            bucket, _, key = url.removeprefix("s3://").partition("/")
            try:
                s3.delete_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                raise DeployError(f"deleting {url} failed: {exc}") from None
        removal.archives_deleted = True
    return removal


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the endpoint's name (as given to `us8k deploy`)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="also delete the deleted models' model.tar.gz from S3 (default: keep them)")
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")


def run(args) -> int:
    print(f"us8k undeploy: removing endpoint {args.name}, its endpoint configs and models", flush=True)
    try:
        removal = undeploy(args.name, args.region, args.delete_archives)
    except AwsError as exc:  # DeployError, or cloud.aws's own (the region)
        raise SystemExit(f"us8k undeploy: error: {exc}") from None
    if not removal.deleted:
        raise SystemExit(f"us8k undeploy: error: no endpoint, endpoint config or model named {args.name!r}")
    for item in removal.deleted:
        print(f"us8k undeploy: deleted {item}", flush=True)
    for url in removal.archives:
        print(f"us8k undeploy: {'deleted' if removal.archives_deleted else 'kept'} {url}", flush=True)
    return 0
