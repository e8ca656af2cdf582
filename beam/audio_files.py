"""Which files are audio, for both jobs: a directory INPUT of `us8k label` and the folders layout of
`us8k ingest` keep the files whose extension (any case) is one of AUDIO_EXTENSIONS."""
from __future__ import annotations

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".aif",
                    ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".wv", ".wma", ".ac3", ".mka",
                    ".webm", ".spx", ".mpc")


def has_audio_extension(path: str) -> bool:
    """Whether `path` ends with one of AUDIO_EXTENSIONS (any case)."""
    return path.lower().endswith(AUDIO_EXTENSIONS)
