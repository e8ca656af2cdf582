"""Folds for a collection that has none (the folders layout, a csv layout without a fold column):
`us8k ingest --num-folds K`, deterministic and by group, so clips cut from one recording never span
two folds.

The rule (RULE, recorded in the manifest's "fold_assignment"): classes are taken in label order; for
each, first the groups already placed (a group that spans classes keeps the fold its first class gave
it) count towards that class's folds, then its groups not yet placed are dealt, largest first (its
clips of that class), ties in the order of the sha256 of the group id, each to the fold with the
fewest clips of that class, then the fewest clips overall, then the lowest number. No randomness:
the same rows give the same folds. Each class needs at least K clips, else one-line error. Pure
Python, no Beam.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib

from beam.ingest_rows import BadRow, ClipRow

DEFAULT_NUM_FOLDS = 10
MIN_FOLDS = 2
RULE = ("by group: classes in label order; a class's groups not yet placed, largest first (then by the sha256 "
        "of the group id), each go to the fold with the fewest clips of that class (then the fewest clips, then "
        "the lowest number); a group spanning classes keeps the fold its first class gave it")


class FoldAssignmentError(ValueError):
    """Folds cannot be assigned (too few folds asked for, a class with fewer clips than folds)."""


def check_num_folds(num_folds: int) -> int:
    """`num_folds` if it is at least MIN_FOLDS, else FoldAssignmentError."""
    if not isinstance(num_folds, int) or num_folds < MIN_FOLDS:
        raise FoldAssignmentError(f"--num-folds must be at least {MIN_FOLDS}, got {num_folds}")
    return num_folds


def _hashed(group: int) -> str:
    return hashlib.sha256(str(group).encode()).hexdigest()


def fold_of_groups(clips: list[ClipRow], class_names: tuple[str, ...], num_folds: int) -> dict[int, int]:
    """{group id: fold 1..num_folds} by RULE; FoldAssignmentError naming a class with fewer clips than folds."""
    check_num_folds(num_folds)
    per_class = collections.Counter(clip.label for clip in clips)
    for label, name in enumerate(class_names):
        if per_class[label] < num_folds:
            raise FoldAssignmentError(f"class {name!r} has {per_class[label]} clip(s), fewer than the {num_folds} "
                                      f"folds to assign (--num-folds {num_folds})")
    by_group: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for clip in clips:
        by_group[clip.group][clip.label] += 1
    groups_of_class: dict[int, list[int]] = collections.defaultdict(list)
    for group, counts in by_group.items():
        for label in counts:
            groups_of_class[label].append(group)
    folds = range(1, num_folds + 1)
    total = dict.fromkeys(folds, 0)
    placed: dict[int, int] = {}
    for label in range(len(class_names)):
        of_class = dict.fromkeys(folds, 0)
        members = groups_of_class[label]
        for group in members:
            if group in placed:
                of_class[placed[group]] += by_group[group][label]
        waiting = sorted((g for g in members if g not in placed), key=lambda g: (-by_group[g][label], _hashed(g)))
        for group in waiting:
            fold = min(folds, key=lambda f: (of_class[f], total[f], f))
            placed[group] = fold
            of_class[fold] += by_group[group][label]
            total[fold] += sum(by_group[group].values())
    return placed


def assign_folds(rows: list[ClipRow | BadRow], class_names: tuple[str, ...],
                 num_folds: int) -> list[ClipRow | BadRow]:
    """`rows` with every ClipRow's fold set by RULE (BadRows as they are, order kept)."""
    clips = [row for row in rows if isinstance(row, ClipRow)]
    fold = fold_of_groups(clips, class_names, num_folds)
    return [dataclasses.replace(row, fold=fold[row.group]) if isinstance(row, ClipRow) else row for row in rows]
