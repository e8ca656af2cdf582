"""Synthetic clips as audio files whose bytes depend on the samples alone (tfdata.synth and
tfdata.synth_layouts): the same seed must give a byte-identical tree.

libsndfile writes two things that vary from run to run: the PEAK chunk of a float WAV holds the wall
clock (zeroed here), and every Ogg page carries a stream serial number drawn at random (set here to a
fixed number, each page's CRC recomputed). FLAC and integer WAV need nothing. Encoding happens in
memory (faster than a file here); `CONTAINERS` maps a file extension to libsndfile's format.
"""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf

CONTAINERS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}  # file extension: libsndfile format
OGG_SERIAL = 0x5553384B  # "K8SU" little-endian: the serial number of every synthetic Ogg stream


def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        register = byte << 24
        for _ in range(8):
            register = ((register << 1) ^ 0x04C11DB7) if register & 0x80000000 else register << 1
        table.append(register & 0xFFFFFFFF)
    return tuple(table)


_OGG_CRC_TABLE = _ogg_crc_table()


def ogg_crc(page: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0, no final XOR,
    over the page with its checksum field zeroed."""
    register, table = 0, _OGG_CRC_TABLE
    for byte in page:
        register = ((register << 8) & 0xFFFFFFFF) ^ table[(register >> 24) ^ byte]
    return register


def fixed_ogg_serial(data: bytes, serial: int = OGG_SERIAL) -> bytes:
    """An Ogg stream with every page's serial number set to `serial` and its CRC recomputed."""
    out, pos = bytearray(data), 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = out[pos + 26]
        size = 27 + segments + sum(out[pos + 27:pos + 27 + segments])
        out[pos + 14:pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22:pos + 26] = bytes(4)
        out[pos + 22:pos + 26] = ogg_crc(bytes(out[pos:pos + size])).to_bytes(4, "little")
        pos += size
    return bytes(out)


def _zero_wav_peak_time(data: bytearray) -> None:
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = bytes(data[pos:pos + 4]), int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk_id == b"PEAK":  # id, size, version (4 bytes), timestamp (4 bytes), per-channel peaks
            data[pos + 12:pos + 16] = bytes(4)
        if chunk_id == b"data":
            break
        pos += 8 + size + (size & 1)


def wav_bytes(frames: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    """Encode (frames, channels) as WAV with libsndfile. The PEAK chunk of float files holds the
    wall-clock time: zeroed, so equal samples give equal bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, format="WAV", subtype=subtype)
    data = bytearray(buffer.getbuffer())
    _zero_wav_peak_time(data)
    return bytes(data)


def audio_bytes(frames: np.ndarray, sample_rate: int, extension: str, subtype: str) -> bytes:
    """Encode (frames, channels) in the container of `extension` ("wav", "flac", "ogg") with
    libsndfile's `subtype` ("PCM_16", "FLOAT", "VORBIS"…), byte for byte the same for the same samples."""
    if extension == "wav":
        return wav_bytes(frames, sample_rate, subtype)
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, format=CONTAINERS[extension], subtype=subtype)
    data = bytes(buffer.getbuffer())
    return fixed_ogg_serial(data) if extension == "ogg" else data
