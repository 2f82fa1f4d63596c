"""Job audio and results: a directory by default, an S3-compatible bucket (boto3) for several
machines. Both write whole objects or nothing: the directory through a temporary file renamed
into place, S3 by its single-request ``PUT``. Any failure of the store is a :class:`StoreError`.
A missing bucket is created on the first write.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

AUDIO = "audio"
RESULT = "result.json"


class StoreError(Exception):
    """The store could not do what was asked (disk full, unreachable, refused)."""


class JobFiles(Protocol):
    def put(self, job_id: str, name: str, data: bytes) -> None: ...
    def get(self, job_id: str, name: str) -> bytes: ...
    def delete_job(self, job_id: str) -> None: ...


class DirectoryFiles:
    """``<root>/<job id>/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, job_id: str, name: str, data: bytes) -> None:
        folder = self.root / job_id
        temporary = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as out:
                temporary = Path(out.name)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / name)
        except OSError as error:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            _remove_if_empty(folder)
            raise StoreError(f"could not write {name} of {job_id}: {error}") from error

    def get(self, job_id: str, name: str) -> bytes:
        try:
            return (self.root / job_id / name).read_bytes()
        except OSError as error:
            raise StoreError(f"could not read {name} of {job_id}: {error}") from error

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def job_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


class S3Files:
    """``s3://<bucket>/<prefix><job id>/<name>`` through boto3."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                          connect_timeout=5, read_timeout=30))

    def _key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}{job_id}/{name}"

    def _call(self, what: str, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise StoreError(f"S3 store {self.bucket!r} could not {what}: {error}") from error

    def put(self, job_id: str, name: str, data: bytes) -> None:
        store = lambda: self._call("store the file", self.client.put_object,
                                   Key=self._key(job_id, name), Body=data)
        try:
            store()
        except StoreError as error:
            if getattr(error.__cause__, "response", {}).get("Error", {}).get("Code") != \
                    "NoSuchBucket":
                raise
            self._call("create its bucket", self.client.create_bucket)
            store()

    def get(self, job_id: str, name: str) -> bytes:
        answer = self._call("read the file", self.client.get_object, Key=self._key(job_id, name))
        return answer["Body"].read()

    def delete_job(self, job_id: str) -> None:
        self._call("delete the files", self.client.delete_objects, Delete={"Objects": [
            {"Key": self._key(job_id, AUDIO)}, {"Key": self._key(job_id, RESULT)}]})


def open_files(storage_url: str | None, default_root: Path,
               endpoint_url: str | None = None) -> JobFiles:
    """The store named by ``storage_url`` (``s3://bucket/prefix`` or a directory path), or
    ``default_root`` when unset."""
    if not storage_url:
        return DirectoryFiles(default_root)
    parsed = urlparse(storage_url)
    if parsed.scheme == "s3":
        prefix = parsed.path.lstrip("/")
        return S3Files(parsed.netloc, prefix + "/" if prefix and not prefix.endswith("/")
                       else prefix, endpoint_url)
    if parsed.scheme in ("", "file"):
        return DirectoryFiles(Path(parsed.path))
    raise ValueError(f"AMANUENSIS_STORAGE_URL must be s3://bucket/prefix or a directory, "
                     f"not {storage_url!r}")
