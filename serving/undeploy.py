"""Delete a SageMaker endpoint and every endpoint config and model made for it (`us8k undeploy --name N`,
whose command line is cli/undeploy.py).

What goes: the endpoint N; every endpoint config and model `us8k deploy` made for it (named
N-<stamp>, tagged us8k:endpoint=N: the current one and those kept for rollback); the config the
endpoint runs and its models even when they are not ours (an endpoint made by other tools); and a
config and a model named N (older deploys named all three alike). The uploaded archives stay in S3
(their s3:// URLs are returned) unless `delete_archives`. Every call honours AWS_ENDPOINT_URL /
AWS_DEFAULT_REGION / credentials. Failures raise `DeployError` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import botocore.exceptions

from cloud.aws import boto_session, is_missing
from serving.deploy import DeployError, owned_versions


@dataclass
class Removal:
    deleted: list[str] = field(default_factory=list)  # "kind name", in deletion order
    archives: list[str] = field(default_factory=list)  # s3:// URLs of the deleted models' archives
    archives_deleted: bool = False


def undeploy(name: str, region: str | None = None, delete_archives: bool = False) -> Removal:
    """Delete endpoint `name`, its configs and models (see the module doc); say what went."""
    session = boto_session(region)
    client = session.client("sagemaker")
    removal = Removal()
    try:
        configs, models = owned_versions(client, name)
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"listing the configs and models of {name!r} failed: {exc}") from None
    current = _current_config(client, name)
    if current:
        _attempt(removal, "endpoint", name, lambda: client.delete_endpoint(EndpointName=name))
    served = _delete_configs(client, removal, current + configs + [name])
    _delete_models(client, removal, list(models) + served + [name])
    if delete_archives and removal.archives:
        _delete_archives(session.client("s3"), removal.archives)
        removal.archives_deleted = True
    return removal


def _attempt(removal: Removal, kind: str, resource: str, call: Callable[[], object]) -> bool:
    """Delete one resource: False when it is already gone; added to `removal.deleted` when deleted."""
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        if is_missing(exc):
            return False
        raise DeployError(f"deleting {kind} {resource!r} failed: {exc}") from None
    removal.deleted.append(f"{kind} {resource}")
    return True


def _current_config(client, name: str) -> list[str]:
    """[the config endpoint `name` runs], or [] when there is no such endpoint."""
    try:
        return [client.describe_endpoint(EndpointName=name)["EndpointConfigName"]]
    except botocore.exceptions.ClientError as exc:
        if not is_missing(exc):
            raise DeployError(f"describing endpoint {name!r} failed: {exc}") from None
    return []


def _delete_configs(client, removal: Removal, configs: list[str]) -> list[str]:
    """Delete the endpoint configs that exist; the models they served."""
    served: list[str] = []
    for config in dict.fromkeys(configs):
        try:
            variants = client.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                continue
            raise DeployError(f"describing endpoint config {config!r} failed: {exc}") from None
        served += [variant["ModelName"] for variant in variants]
        _attempt(removal, "endpoint config", config,
                 lambda c=config: client.delete_endpoint_config(EndpointConfigName=c))
    return served


def _delete_models(client, removal: Removal, models: list[str]) -> None:
    """Delete the models that exist; their archives' s3:// URLs go to `removal.archives`."""
    for model in dict.fromkeys(models):
        try:
            container = client.describe_model(ModelName=model).get("PrimaryContainer", {})
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                continue
            raise DeployError(f"describing model {model!r} failed: {exc}") from None
        if _attempt(removal, "model", model, lambda m=model: client.delete_model(ModelName=m)) \
                and container.get("ModelDataUrl"):
            removal.archives.append(container["ModelDataUrl"])


def _delete_archives(s3, urls: list[str]) -> None:
    for url in urls:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"deleting {url} failed: {exc}") from None
