"""beam: the two Apache Beam jobs and what their drivers share. The command lines are cli/ingest.py and cli/label.py.

    ingest.py             `us8k ingest`'s driver: plan (the metadata CSV), build, run, check, manifest
    ingest_transforms.py  its steps, run by the workers: metadata rows → records | errors
    sinks.py              its size-capped TFRecord writer
    label.py              `us8k label`'s driver: plan (the INPUT), build, run, check, summary
    label_transforms.py   its steps, run by the workers: match, read, decode, format | errors
    label_model.py        its RunInference model handler over the exported SavedModel
    driver.py             what both drivers share: Beam's options, the dry run, a run to its end, counters
    files.py              paths and files through Beam's FileSystems (drivers and workers alike)
    notices.py            Beam's log notices a user need not see, filtered by the entry points
"""
