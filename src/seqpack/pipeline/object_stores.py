"""Conditional writes on object stores: what makes the output lock exclusive on ``gs://`` and ``s3://``.

Object stores have no hard link and no atomic rename, but both have preconditions on a single object:

- GCS: ``ifGenerationMatch=0`` creates an object only if none exists; ``ifGenerationMatch=<g>`` replaces or
  deletes it only while it is still generation ``g``.
- S3: ``If-None-Match: *`` on PutObject creates only if absent; ``If-Match: <etag>`` on PutObject and
  DeleteObject replaces or deletes only while the object is unchanged (conditional writes, 2024).

:func:`conditional_store` gives one small interface over both, built on the clients Beam's own filesystems use
(so the same credentials and ``--s3_endpoint_url`` apply); other schemes get None and the lock falls back to
check-then-write (see ``pipeline.lock``). A *version* is the GCS generation or the S3 ETag, as a string.

    store = conditional_store("gs://bucket/out/.seqpack-lock", options)
    version = store.create("gs://bucket/out/.seqpack-lock", b"...")   # None: someone else holds it
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions


class ConditionalStore(Protocol):
    def read(self, path: str) -> tuple[bytes, str] | None:
        """The object's bytes and their version, in one request; None if it does not exist."""

    def create(self, path: str, data: bytes) -> str | None:
        """Write ``data`` only if ``path`` does not exist: its version, or None if it exists."""

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        """Write ``data`` only while ``path`` is still ``version``: the new version, or None if it changed."""

    def delete(self, path: str, version: str) -> bool:
        """Delete ``path`` only while it is still ``version``: False if it changed (or is gone)."""


def _split(path: str) -> tuple[str, str]:
    bucket, _, key = path.split("://", 1)[1].partition("/")
    return bucket, key


class _Gcs:
    """google-cloud-storage, as Beam's ``GcsFileSystem`` builds it (its credentials and endpoint)."""

    def __init__(self, options: PipelineOptions) -> None:
        from apache_beam.io.gcp.gcsio import create_storage_client
        from google.api_core.exceptions import NotFound, PreconditionFailed

        self.client = create_storage_client(options)
        self.changed = (PreconditionFailed, NotFound)

    def _blob(self, path: str) -> Any:
        bucket, key = _split(path)
        return self.client.bucket(bucket).blob(key)

    def _upload(self, path: str, data: bytes, generation: int) -> str | None:
        blob = self._blob(path)
        try:
            blob.upload_from_string(data, if_generation_match=generation)
        except self.changed:
            return None
        return str(blob.generation)

    def read(self, path: str) -> tuple[bytes, str] | None:
        blob = self._blob(path)
        try:
            data = blob.download_as_bytes()  # sets blob.generation from the response's x-goog-generation
        except self.changed:
            return None
        return data, str(blob.generation)

    def create(self, path: str, data: bytes) -> str | None:
        return self._upload(path, data, 0)

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        return self._upload(path, data, int(version))

    def delete(self, path: str, version: str) -> bool:
        try:
            self._blob(path).delete(if_generation_match=int(version))
        except self.changed:
            return False
        return True


class _S3:
    """boto3, as Beam's ``S3FileSystem`` builds it (``--s3_endpoint_url``, ``--s3_access_key_id``, ...)."""

    def __init__(self, options: PipelineOptions) -> None:
        from apache_beam.io.aws.clients.s3.boto3_client import Client
        from botocore.exceptions import ClientError

        self.client = Client(options).client
        self.error = ClientError

    def _changed(self, error: Any) -> bool:
        """412 Precondition Failed, 409 ConditionalRequestConflict (a racing write), 404 gone."""
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 409, 412)

    def _put(self, path: str, data: bytes, **condition: str) -> str | None:
        bucket, key = _split(path)
        try:
            return str(self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"])
        except self.error as error:
            if self._changed(error):
                return None
            raise

    def read(self, path: str) -> tuple[bytes, str] | None:
        bucket, key = _split(path)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except self.error as error:
            if self._changed(error):
                return None
            raise
        return response["Body"].read(), str(response["ETag"])

    def create(self, path: str, data: bytes) -> str | None:
        return self._put(path, data, IfNoneMatch="*")

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        return self._put(path, data, IfMatch=version)

    def delete(self, path: str, version: str) -> bool:
        bucket, key = _split(path)
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=version)
        except self.error as error:
            if self._changed(error):
                return False
            raise
        return True


def conditional_store(path: str, options: PipelineOptions | None) -> ConditionalStore | None:
    """The conditional operations for ``path``'s object store; None for local paths and other schemes."""
    options = options or FileSystems._pipeline_options or PipelineOptions([])
    scheme = FileSystems.get_scheme(path)
    if scheme == "gs":
        return _Gcs(options)
    if scheme == "s3":
        return _S3(options)
    return None


def delete_objects(paths: list[str], options: PipelineOptions | None = None) -> None:
    """Delete the objects (or, for a path ending in ``/``, every object under it) that exist; a missing one is
    no error. On gs:// one request per object: Beam's GcsFileSystem deletes through the JSON batch endpoint,
    which the fake-gcs-server the tests run against does not implement, and seqpack deletes few objects."""
    for path in paths:
        if FileSystems.get_scheme(path) != "gs":
            if path.endswith("/") or FileSystems.exists(path):  # a prefix "exists" only as the objects under it
                FileSystems.delete([path])
            continue
        gcs = _Gcs(options or FileSystems._pipeline_options or PipelineOptions([]))
        bucket, key = _split(path)
        keys = [blob.name for blob in gcs.client.list_blobs(bucket, prefix=key)] if key.endswith("/") else [key]
        for name in keys:
            with contextlib.suppress(gcs.changed):  # gone meanwhile
                gcs.client.bucket(bucket).blob(name).delete()
