"""Paths and files through Beam's FileSystems (local, gs://, s3://), for the drivers and the workers of
both jobs: absolute paths, an input file's bytes under a size limit, small text files, JSON lines."""
from __future__ import annotations

import json
import os

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfdata.audio import AudioDecodeError

READ_BLOCK_BYTES = 1 << 20  # a file of unknown size is read in blocks of this, up to the limit
COUNT_BLOCK_BYTES = 1 << 22  # count_lines reads this much at a time


def is_remote(path: str) -> bool:
    """Whether `path` is a URL of a Beam filesystem (gs://, s3://…) rather than a local path."""
    return "://" in path


def absolute(path: str | os.PathLike) -> str:
    """A local path made absolute (the job's workers do not share the driver's working directory); a URL as it is."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def read_audio_bytes(path: str, max_bytes: int | None = None, size: int | None = None) -> bytes:
    """The file's bytes; "file not found" when it is missing. With `max_bytes`, more than that is an
    AudioDecodeError, having read no more than max_bytes + 1: in blocks unless `size`, known from
    matching, says it fits."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            if max_bytes is None or (size is not None and size <= max_bytes):
                data = handle.read()
            else:
                buffer = bytearray()
                while len(buffer) <= max_bytes:
                    block = handle.read(min(READ_BLOCK_BYTES, max_bytes + 1 - len(buffer)))
                    if not block:
                        break
                    buffer += block
                data = bytes(buffer)
    except FileNotFoundError:
        raise AudioDecodeError("file not found") from None
    except Exception as exc:  # Beam wraps filesystem errors in BeamIOError / IOError
        if not FileSystems.exists(path):
            raise AudioDecodeError("file not found") from None
        raise AudioDecodeError(f"cannot read file: {exc}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioDecodeError(f"file is larger than the limit of {max_bytes / 2**20:g} MB (--max-file-mb)")
    return data


def read_text(path: str) -> str:
    """The file's text ("" when it does not exist)."""
    if not FileSystems.exists(path):
        return ""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode()


def holds_empty_files(path: str) -> bool:
    """Whether a file of no bytes can be written at `path` through Beam's FileSystems: locally and on
    gs:// yes; on s3:// no. Beam 2.77's S3 writer (io/aws/s3io.py, S3Uploader) makes every file a
    multipart upload and sends a part only when it has bytes, so closing an empty file completes an
    upload of no parts, which S3 refuses (MalformedXML). The jobs skip an empty text or shard file
    there (skip_if_empty), and the drivers write no empty file there."""
    return FileSystems.get_scheme(path) != "s3"


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode())


def write_json(path: str, value) -> None:
    """`value` as indented JSON (a manifest, a summary), one final newline."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def jsonl_line(entry: dict) -> str:
    """One JSON-lines entry, keys sorted (the same entry is always the same line)."""
    return json.dumps(entry, sort_keys=True)


def sort_jsonl(path: str, key) -> list[dict]:
    """Read a JSON-lines file (none: empty), rewrite it sorted by `key` (deterministic output),
    one `jsonl_line` per entry; return its entries in that order. No entries: an empty file, except
    where the filesystem cannot hold one (s3://, `holds_empty_files`): there the file stays absent."""
    entries = sorted((json.loads(line) for line in read_text(path).splitlines() if line.strip()), key=key)
    text = "".join(jsonl_line(e) + "\n" for e in entries)
    if text or holds_empty_files(path):
        write_text(path, text)
    return entries


def count_lines(path: str) -> int:
    """Lines of a (possibly large) file, a last one without its newline included, read in blocks (0 when
    it does not exist)."""
    if not FileSystems.exists(path):
        return 0
    count, last = 0, b"\n"
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while block := handle.read(COUNT_BLOCK_BYTES):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
