"""beam: the two Apache Beam jobs and what their drivers share. The command lines are cli/ingest.py and cli/label.py.

    ingest.py             `us8k ingest`'s driver: plan (the dataset's layout), build, run, check, manifest
    layouts.py            the layouts it reads (urbansound8k, esc50, csv, folders): detection, --classes, folds
    layout_csvs.py        the readers of the three CSV layouts (urbansound8k, esc50, csv)
    layout_folders.py     the reader of the folders layout (ROOT/<class>/…/<audio file>)
    fold_assignment.py    folds dealt by group where the data has none (--num-folds)
    ingest_rows.py        what the readers produce and the workers take (ClipRow, BadRow) and their checks
    ingest_transforms.py  its steps, run by the workers: rows → records | errors
    sinks.py              its size-capped TFRecord writer
    label.py              `us8k label`'s driver: plan (the INPUT), build, run, check, summary
    label_transforms.py   its steps, run by the workers: match, read, decode, format | errors
    label_model.py        its RunInference model handler over the exported SavedModel
    driver.py             what both drivers share: Beam's options, the dry run, a run to its end, counters
    files.py              paths and files through Beam's FileSystems (drivers and workers alike)
    audio_files.py        which files are audio (a directory INPUT of `us8k label`, the folders layout)
    notices.py            Beam's log notices a user need not see, filtered by the entry points
"""
