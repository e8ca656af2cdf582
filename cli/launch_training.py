"""`us8k launch-training`: `us8k train`'s training as a SageMaker training job; `--status NAME` reports one.

The job's flags come first, then the same configuration flags as `us8k train`
(`cli.train_config_flags`); the work is `models.launch` (one `JobRequest`), the AWS sessions
`cloud.aws`.
"""
from __future__ import annotations

import argparse

from cli import CommandError
from cli.output import progress
from cli.train_config_flags import add_config_arguments, config_from_flags
from cloud.aws import AwsError
from models.config import ConfigError
from models.errors import LaunchError

ERRORS = (LaunchError, AwsError, ConfigError)
SDK_PACKAGES = ("botocore", "boto3", "sagemaker")  # their errors are reported as one line too


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from models.launch import DEFAULT_INSTANCE_TYPE, DEFAULT_JOB_PREFIX, DEFAULT_VOLUME_GB, INPUT_MODES, MAX_RUN_S

    job = parser.add_argument_group("the job (required unless --status)")
    job.add_argument("--records", metavar="s3://BUCKET/records",
                     help="the ingested records (fold1..foldK/, manifest.json)")
    job.add_argument("--output", metavar="s3://BUCKET/runs",
                     help="the job's prefix: NAME/output/model.tar.gz, NAME/checkpoints/, NAME/tensorboard/")
    job.add_argument("--role", metavar="ARN", help="the SageMaker execution role")
    job.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE,
                     help=f"default {DEFAULT_INSTANCE_TYPE} (4 GPUs)")
    job.add_argument("--instance-count", type=int, default=1,
                     help="instances; > 1 runs MultiWorkerMirroredStrategy across them (default 1)")
    job.add_argument("--job-name", help=f"default {DEFAULT_JOB_PREFIX}-<UTC time>")
    job.add_argument("--input-mode", choices=INPUT_MODES, default="File",
                     help="records channel: File copies them to the instance first, FastFile streams them "
                          "(default File)")
    job.add_argument("--spot", action="store_true", help="managed spot training (resumes from checkpoints)")
    job.add_argument("--max-run", type=int, default=MAX_RUN_S, help=f"seconds of training at most ({MAX_RUN_S})")
    job.add_argument("--max-wait", type=int, default=None,
                     help="--spot: seconds of training plus waiting for spot capacity (default --max-run)")
    job.add_argument("--volume-size", type=int, default=DEFAULT_VOLUME_GB,
                     help=f"GB of instance storage (default {DEFAULT_VOLUME_GB})")
    job.add_argument("--region", help="AWS region (default: the environment's)")
    job.add_argument("--wait", action="store_true", help="wait for the job to finish, streaming its log")
    job.add_argument("--config", metavar="RUN/config.json",
                     help="train a run's configuration; training flags given beside it override its values")
    job.add_argument("--status", metavar="NAME", help="report job NAME's state and last metrics, launch nothing")
    add_config_arguments(parser)


def job_request(args: argparse.Namespace):
    """The JobRequest of the flags: --config's TrainConfig (else the defaults) with every training flag
    given over it."""
    from models.config import read_run_config
    from models.launch import JobRequest

    missing = [flag for flag in ("records", "output", "role") if not getattr(args, flag)]
    if missing:
        raise LaunchError(f"--{', --'.join(missing)} required (or --status NAME)")
    config = config_from_flags(args, read_run_config(args.config)[0] if args.config else None)
    return JobRequest(records=args.records, output=args.output, role=args.role, config=config,
                      job_name=args.job_name, instance_type=args.instance_type, instance_count=args.instance_count,
                      input_mode=args.input_mode, spot=args.spot, max_run=args.max_run, max_wait=args.max_wait,
                      volume_size=args.volume_size, wait=args.wait)


def print_status(status: dict, log) -> None:
    from models.launch import status_lines

    first, *rest = status_lines(status)
    log(first)
    for line in rest:
        print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    from cloud.aws import boto_session
    from models import launch

    log = progress("launch-training")
    try:
        session = boto_session(args.region)
        if args.status:
            print_status(launch.job_status(session.client("sagemaker"), args.status), log)
            return 0
        request = launch.checked(job_request(args))
        name, output = launch.launch(request, session, log=log), request.output
        print(f"  checkpoints {output}/{name}/checkpoints, TensorBoard {output}/{name}/tensorboard, "
              f"model {output}/{name}/output/model.tar.gz", flush=True)
        if args.wait:
            print_status(launch.job_status(session.client("sagemaker"), name), log)
        else:
            print(f"  follow it: us8k launch-training --status {name}", flush=True)
    except Exception as error:  # the SDK's and botocore's own errors: one line
        if type(error).__module__.split(".")[0] in SDK_PACKAGES:
            raise CommandError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
        raise
    return 0
