"""`us8k synth OUT`: the command line of the synthetic dataset (tfdata.synth): its flags and where its
lines go (stdout, flushed; none with --quiet). `--folds` is a comma-separated list, as `us8k cv`'s."""
from __future__ import annotations

import argparse
import functools

ERRORS = (ValueError, OSError)  # tfdata.synth's refusals (FileExistsError is an OSError): `us8k synth: error: …`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tfdata.contract import NUM_FOLDS
    from tfdata.synth import DEFAULT_CLIPS_PER_CLASS_PER_FOLD, DEFAULT_DIFFICULTY

    parser.add_argument("out", metavar="OUT", help="dataset directory to create (must be empty or absent)")
    parser.add_argument("--clips-per-class-per-fold", type=int, default=DEFAULT_CLIPS_PER_CLASS_PER_FOLD,
                        metavar="N", help="clips of each class in each fold (default %(default)s)")
    parser.add_argument("--folds", type=fold_list, default=list(range(1, NUM_FOLDS + 1)), metavar="K,K,…",
                        help="comma-separated folds to write, e.g. 1,2,3 (default: all 10)")
    parser.add_argument("--seed", type=int, default=0, help="same seed → byte-identical files and CSV")
    parser.add_argument("--corrupt", type=int, default=0, metavar="N",
                        help="N extra listed files that are unreadable (empty, truncated WAV, text)")
    parser.add_argument("--difficulty", type=difficulty, default=DEFAULT_DIFFICULTY,
                        help="easy | medium | hard, or a number in [0, 1]: lower SNR and a louder second "
                             "class as it rises (default %(default)s)")
    parser.add_argument("--imbalance", action="store_true",
                        help="UrbanSound8K's class imbalance (car_horn, gun_shot ~40%% of the others)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the metadata CSV and audio/fold* in a non-empty OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from tfdata.synth import generate_dataset

    generate_dataset(args.out, clips_per_class_per_fold=args.clips_per_class_per_fold, folds=args.folds,
                     seed=args.seed, corrupt=args.corrupt, difficulty=args.difficulty, imbalance=args.imbalance,
                     progress=None if args.quiet else functools.partial(print, flush=True),
                     overwrite=args.overwrite)
    return 0


def fold_list(text: str) -> list[int]:
    """`--folds 1,2,3` → [1, 2, 3]; anything but comma-separated fold numbers is a usage error saying so."""
    from tfdata.contract import NUM_FOLDS

    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and 1 <= int(part) <= NUM_FOLDS for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers in 1..{NUM_FOLDS}, "
                                         f"e.g. 1,2,3; got {text!r}")
    return [int(part) for part in parts]


def difficulty(text: str) -> float:
    """`--difficulty`: a level name or a number in [0, 1] (tfdata.synth.parse_difficulty), else a usage error."""
    from tfdata.synth import parse_difficulty

    try:
        return parse_difficulty(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
