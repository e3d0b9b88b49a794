"""User-facing errors.

Anything the user can fix (a bad config value, a missing dataset, a tampered
checkpoint, a full disk) is raised as a `TinycatsError` whose message is one line
naming the problem and the fix. The CLI prints it and exits with code 2, without a
traceback; programming errors keep their traceback.
"""

from __future__ import annotations


class TinycatsError(Exception):
    """A problem the user can fix; `str(err)` is the one-line message to print."""


class ConfigError(TinycatsError):
    """An invalid config file, key or value."""


class DataError(TinycatsError):
    """A missing, corrupt or inconsistent dataset."""


class CheckpointError(TinycatsError):
    """No usable checkpoint, or one that fails verification or safe loading."""


class StorageError(TinycatsError):
    """The output store cannot be written (full disk, permissions, busy volume)."""


class ImageTooLargeError(DataError):
    """An image whose header claims more pixels than allowed (a decompression bomb, or
    simply too big to serve)."""
