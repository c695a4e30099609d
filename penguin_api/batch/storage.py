"""Local paths and gs:// URLs behind one small surface: list, read, write.

Google's own client library (google-cloud-storage) does the gs:// work. It is an extra
(`pip install 'penguin-api[gcs]'`): without it a gs:// path raises StorageError naming the
install command, never an ImportError traceback. STORAGE_EMULATOR_HOST, read by the
library itself, points it at an emulator.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GS = "gs://"
GCS_INSTALL = "pip install 'penguin-api[gcs]'"
#: Downloads in flight per worker: GCS answers in tens of ms, a photo computes in ~10 ms.
_READ_THREADS = 8


class StorageError(Exception):
    """A path cannot be listed, read or written; the message says why and what to do."""


class UnreadablePhoto(Exception):  # noqa: N818 - reads as what happened to the photo
    """One photo's bytes could not be read; the message is its row's `detail`."""


def is_gs(path: str) -> bool:
    return path.startswith(GS)


@dataclass(frozen=True)
class GsPath:
    """gs://bucket/name, split."""

    bucket: str
    name: str

    @classmethod
    def parse(cls, url: str) -> GsPath:
        bucket, _, name = url[len(GS) :].partition("/")
        if not bucket:
            raise StorageError(f"{url}: a gs:// path needs a bucket, as in gs://bucket/photos")
        return cls(bucket, name)

    @property
    def folder(self) -> str:
        """The name as a prefix that matches only what is inside it ('' for the bucket)."""
        return self.name if not self.name or self.name.endswith("/") else self.name + "/"

    def __str__(self) -> str:
        return f"{GS}{self.bucket}/{self.name}"


@functools.cache
def client() -> Any:
    """This process's storage client (each worker process builds its own)."""
    try:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError:
        raise StorageError(
            f"gs:// paths need Google's storage client, which is not installed: {GCS_INSTALL}"
        ) from None
    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise StorageError(
            "no Google Cloud credentials for gs:// paths: run `gcloud auth application-default "
            "login`, or run where a service account is attached (Cloud Run does this)"
        ) from None


def _api_error(action: str, exc: Exception) -> StorageError:
    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
    return StorageError(f"cannot {action}: {message}")


def list_objects(url: str) -> list[str]:
    """Every object under gs://bucket/prefix (the prefix taken as a folder), as gs:// URLs.

    A URL that names one object lists that object.
    """
    path = GsPath.parse(url)
    gcs = client()
    try:
        names = [b.name for b in gcs.list_blobs(path.bucket, prefix=path.folder)]
        if not names and path.name and gcs.bucket(path.bucket).blob(path.name).exists():
            names = [path.name]
    except Exception as exc:  # google.api_core errors, transport errors: all the same to a user
        raise _api_error(f"list {url}", exc) from None
    return [f"{GS}{path.bucket}/{name}" for name in sorted(names) if not name.endswith("/")]


def read_bytes(key: str) -> bytes:
    """The bytes of a local file or a gs:// object; UnreadablePhoto says why not."""
    if is_gs(key):
        path = GsPath.parse(key)
        try:
            return client().bucket(path.bucket).blob(path.name).download_as_bytes()
        except StorageError:
            raise
        except Exception as exc:
            code = getattr(exc, "code", None)
            reason = f"{code} {getattr(exc, 'reason', '')}".strip() if code else type(exc).__name__
            raise UnreadablePhoto(f"Cloud Storage could not send it ({reason}).") from None
    try:
        return Path(key).read_bytes()
    except OSError as exc:
        raise UnreadablePhoto(f"{exc.strerror or type(exc).__name__}.") from None


def read_many(keys: Iterable[str]) -> Iterator[tuple[str, bytes | UnreadablePhoto]]:
    """(key, bytes or the reason it is unreadable) for each key, in order.

    gs:// objects are fetched a few at a time in threads, so the network wait of the next
    photos overlaps the computing of this one; local files are read one by one.
    """
    keys = list(keys)

    def fetch(key: str) -> bytes | UnreadablePhoto:
        try:
            return read_bytes(key)
        except UnreadablePhoto as exc:
            return exc

    if not any(is_gs(k) for k in keys):
        for key in keys:
            yield key, fetch(key)
        return
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        yield from zip(keys, pool.map(fetch, keys), strict=True)


def upload(local: Path, url: str) -> None:
    """Copy a local file to a gs:// object, replacing it (the object appears whole or not)."""
    path = GsPath.parse(url)
    try:
        client().bucket(path.bucket).blob(path.name).upload_from_filename(str(local))
    except StorageError:
        raise
    except Exception as exc:
        raise _api_error(f"write {url}", exc) from None


def list_folder(folder: str) -> list[str]:
    """Names (not paths) of the files directly in a local folder or a gs:// folder."""
    if is_gs(folder):
        path = GsPath.parse(folder)
        try:
            blobs = client().list_blobs(path.bucket, prefix=path.folder, delimiter="/")
            names = [b.name[len(path.folder) :] for b in blobs]
        except StorageError:
            raise
        except Exception as exc:
            raise _api_error(f"list {folder}", exc) from None
        return sorted(n for n in names if n)
    try:
        return sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc.strerror}") from None


def join(folder: str, name: str) -> str:
    """folder/name for a local or gs:// folder."""
    if is_gs(folder):
        path = GsPath.parse(folder)
        return f"{GS}{path.bucket}/{path.folder}{name}"
    return str(Path(folder) / name)


def read_text(key: str) -> str:
    """A whole local file or gs:// object as UTF-8 text; StorageError if it cannot be read."""
    try:
        return read_bytes(key).decode("utf-8")
    except UnreadablePhoto as exc:
        raise StorageError(f"cannot read {key}: {exc}") from None
    except UnicodeDecodeError:
        raise StorageError(f"{key} is not UTF-8 text") from None
