"""`us8k synth OUT [--layout …]`: the command line of the synthetic collections (tfdata.synth_layouts;
UrbanSound8K's layout, the default, is tfdata.synth): its flags and where its lines go (stdout,
flushed; none with --quiet). `--folds` and `--classes` are comma-separated lists, as `us8k cv`'s
`--folds` and `us8k ingest`'s `--classes`; `--num-classes` counts classes as `--num-folds` counts folds."""
from __future__ import annotations

import argparse
import functools

ERRORS = (ValueError, OSError)  # tfdata.synth's refusals (FileExistsError is an OSError): `us8k synth: error: …`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tfdata.synth import DEFAULT_CLIPS_PER_CLASS_PER_FOLD, DEFAULT_DIFFICULTY
    from tfdata.synth_layouts import DEFAULT_CLIPS_PER_CLASS, DEFAULT_LAYOUT, DEFAULT_NUM_CLASSES, LAYOUTS

    parser.add_argument("out", metavar="OUT", help="dataset directory to create (must be empty or absent)")
    parser.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                        help="urbansound8k: UrbanSound8K's layout and ten classes (default); esc50: meta/esc50.csv "
                             "+ audio/; folders: a folder per class; csv: metadata.csv + clips/")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--classes", type=class_list, metavar="NAME,NAME,…",
                       help="esc50, folders, csv: comma-separated class names, in label order")
    names.add_argument("--num-classes", type=int, metavar="N",
                       help=f"esc50, folders, csv: N generic classes (bell, hum, chirp, click, rain, buzz, warble, "
                            f"knock, class_009…; default {DEFAULT_NUM_CLASSES})")
    parser.add_argument("--clips-per-class-per-fold", type=int, metavar="N",
                        help=f"layouts with folds: clips of each class in each fold "
                             f"(default {DEFAULT_CLIPS_PER_CLASS_PER_FOLD})")
    parser.add_argument("--clips-per-class", type=int, metavar="N",
                        help=f"folders, csv --no-fold-column: clips of each class (default {DEFAULT_CLIPS_PER_CLASS})")
    parser.add_argument("--folds", type=fold_list, metavar="K,K,…",
                        help="comma-separated folds to write, e.g. 1,2,3 (default: urbansound8k's 10; "
                             "esc50 and csv: 1..5; folders has none)")
    parser.add_argument("--no-fold-column", dest="fold_column", action="store_false",
                        help="csv: write metadata.csv without a fold column (ingestion assigns folds by group)")
    parser.add_argument("--seed", type=int, default=0, help="same seed → byte-identical files and CSV")
    parser.add_argument("--corrupt", type=int, default=0, metavar="N",
                        help="N extra listed files that are unreadable (empty, truncated WAV, text)")
    parser.add_argument("--difficulty", type=difficulty, default=DEFAULT_DIFFICULTY,
                        help="easy | medium | hard, or a number in [0, 1]: lower SNR (and, in urbansound8k, a "
                             "louder second class) as it rises (default %(default)s)")
    parser.add_argument("--imbalance", action="store_true",
                        help="urbansound8k: UrbanSound8K's class imbalance (car_horn, gun_shot ~40%% of the others)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the layout's own files in a non-empty OUT (its CSV and audio; for folders, "
                             "every sub-folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from tfdata.synth_layouts import generate

    generate(args.layout, args.out, classes=args.classes, num_classes=args.num_classes, folds=args.folds,
             fold_column=args.fold_column, clips_per_class_per_fold=args.clips_per_class_per_fold,
             clips_per_class=args.clips_per_class, seed=args.seed, corrupt=args.corrupt, difficulty=args.difficulty,
             imbalance=args.imbalance, progress=None if args.quiet else functools.partial(print, flush=True),
             overwrite=args.overwrite)
    return 0


def fold_list(text: str) -> list[int]:
    """`--folds 1,2,3` → [1, 2, 3]; anything but comma-separated fold numbers is a usage error saying so.
    (Each layout then checks its own range: esc50's folds are 1..5.)"""
    from tfdata.synth_layouts import CSV_MAX_FOLDS

    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and 1 <= int(part) <= CSV_MAX_FOLDS for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers in 1..{CSV_MAX_FOLDS}, "
                                         f"e.g. 1,2,3; got {text!r}")
    return [int(part) for part in parts]


def class_list(text: str) -> tuple[str, ...]:
    """`--classes a,b,c`: tfdata.classes.parse_class_list, else a usage error naming the rule broken."""
    from tfdata.classes import ClassListError, parse_class_list

    try:
        return parse_class_list(text)
    except ClassListError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def difficulty(text: str) -> float:
    """`--difficulty`: a level name or a number in [0, 1] (tfdata.synth.parse_difficulty), else a usage error."""
    from tfdata.synth import parse_difficulty

    try:
        return parse_difficulty(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
