"""The ingestion's TFRecord writer: Beam's own retry-safe file sink, sharded by the runner, capped in bytes.

`WriteCappedTFRecords(prefix, max_shard_bytes)` is `beam.io.Write` of Beam's `_TFRecordSink` with
`num_shards=0` and FileBasedSink's `max_bytes_per_shard` set (WriteToTFRecord does not expose
it in Beam 2.77). With `num_shards=0`, `iobase.WriteImpl` writes each bundle's records to a
temporary file as they arrive, in the stage that produced them (`_WriteBundleDoFn`: nothing is
grouped or held in memory), starts a new file when the current one reaches the cap, and the
finalize step renames the temporary files to PREFIX-SSSSS-of-NNNNN.SUFFIX (N = the files written).
Retried bundles write new temporary files; only the successful attempts' files are renamed.

The sink checks the cap after each record, so a file can pass it by one record: the cap given
to the sink is the target minus one record's bytes, so no shard exceeds the target.

Empty files. A writer is opened at a bundle's first record (and after a roll-over, at the next
record), so the only empty file Beam writes is the one its finalize step adds for a fold that got
no record at all (every row failed): `iobase.WriteImpl` treats num_shards=0 as "at least one".
Locally and on gs:// that is an empty, readable shard; with `skip_if_empty` (s3://, where Beam 2.77
cannot write an empty object: beam.files.holds_empty_files) the fold gets no file.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.tfrecordio import _TFRecordSink


class CappedTFRecordSink(_TFRecordSink):
    """Beam's TFRecord sink (uncompressed, runner-chosen shard count), at most `max_bytes_per_shard`
    bytes written to a file before the next one starts (0 or None: no cap); `skip_if_empty`: no
    file at all for no records (else one empty file)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str, max_bytes_per_shard: int | None,
                 skip_if_empty: bool = False):
        super().__init__(file_path_prefix, BytesCoder(), file_name_suffix, num_shards=0,
                         shard_name_template=None, compression_type=CompressionTypes.UNCOMPRESSED)
        self.max_bytes_per_shard = int(max_bytes_per_shard) if max_bytes_per_shard else None
        self.skip_if_empty = skip_if_empty  # FileBasedSink's; _TFRecordSink does not pass it on


def sink_cap(target_bytes: int, record_bytes: int) -> int | None:
    """The cap for shards of at most `target_bytes` when a framed record is at most `record_bytes`
    (the sink checks after writing): target − one record, at least 1; None for target 0 (no cap)."""
    if target_bytes <= 0:
        return None
    return max(1, int(target_bytes) - int(record_bytes))


class WriteCappedTFRecords(beam.PTransform):
    """PCollection[bytes] → TFRecord files PREFIX-SSSSS-of-NNNNN.SUFFIX, one or more per bundle,
    each at most `max_shard_bytes` (given a record of at most `record_bytes`); 0: one per bundle. No
    records: one empty file, or none with `skip_if_empty`."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str, max_shard_bytes: int, record_bytes: int,
                 skip_if_empty: bool = False):
        super().__init__()
        self._sink = CappedTFRecordSink(file_path_prefix, file_name_suffix, sink_cap(max_shard_bytes, record_bytes),
                                        skip_if_empty)

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)
