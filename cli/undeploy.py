"""`us8k undeploy --name N [--delete-archives] [--region R]`: delete a SageMaker endpoint, its endpoint
configs and models (serving.undeploy), printing one line per deleted resource and per archive."""
from __future__ import annotations

from cli import CommandError
from cli.output import progress
from cloud.aws import AwsError

ERRORS = (AwsError,)  # DeployError, or cloud.aws's own (the region)


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the endpoint's name (as given to `us8k deploy`)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="also delete the deleted models' model.tar.gz from S3 (default: keep them)")
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")


def run(args) -> int:
    from serving.undeploy import undeploy

    log = progress("undeploy")
    log(f"removing endpoint {args.name}, its endpoint configs and models")
    removal = undeploy(args.name, args.region, args.delete_archives)
    if not removal.deleted:
        raise CommandError(f"no endpoint, endpoint config or model named {args.name!r}")
    for item in removal.deleted:
        log(f"deleted {item}")
    for url in removal.archives:
        log(f"{'deleted' if removal.archives_deleted else 'kept'} {url}")
    return 0
