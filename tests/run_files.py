"""Reading what a training run wrote, for the tests: its history CSV rows and its TensorBoard tags."""
import csv
import glob
import os

import tensorflow as tf


def history_rows(run_dir, name):
    with open(os.path.join(run_dir, "history", f"{name}.csv")) as f:
        return list(csv.DictReader(f))


def event_tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags
