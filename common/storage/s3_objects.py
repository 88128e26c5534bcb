"""ObjectStore on an S3 bucket (boto3; honours AWS_ENDPOINT_URL for moto and LocalStack)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from common.errors import NotFound, ObjectChanged


class S3ObjectStore:
    def __init__(self, bucket: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.bucket = bucket
        self._s3 = client

    def put(self, key: str, data: bytes) -> None:
        # A single PUT is atomic in S3: readers never see a partial object.
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise NotFound(f"object {key!r} does not exist in s3://{self.bucket}") from None

    def put_file(self, key: str, path: Path, move: bool = False) -> None:
        # boto3's managed transfer: one PUT, or a multipart upload that becomes visible only
        # when it completes (an interrupted one is aborted by the bucket's lifecycle rule).
        self._s3.upload_file(str(path), self.bucket, key)

    def _refused(self, exc: BaseException, key: str, version: str | None) -> BaseException:
        """NotFound or ObjectChanged for a GET or HEAD S3 refused so; ``exc`` otherwise."""
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            return NotFound(f"object {key!r} does not exist in s3://{self.bucket}")
        if code in ("412", "PreconditionFailed") and version is not None:
            return self._changed(key, version)
        return exc

    def _changed(self, key: str, version: str) -> ObjectChanged:
        return ObjectChanged(f"object {key!r} in s3://{self.bucket} was replaced after it was "
                             f"first read (its ETag is no longer {version})")

    def open_read(self, key: str, version: str | None = None) -> BinaryIO:
        import tempfile

        from botocore.exceptions import ClientError

        out = tempfile.TemporaryFile()  # noqa: SIM115 (returned to the caller, who closes it)
        try:
            if version is None:  # boto3's managed transfer (parallel ranged GETs)
                self._s3.download_fileobj(self.bucket, key, out)
            else:
                self._download_version(key, version, out)
        except ClientError as exc:
            out.close()
            raise self._refused(exc, key, version) from None
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    def _download_version(self, key: str, version: str, out: BinaryIO) -> None:
        """The object at ``version`` into ``out``: one GET with If-Match when it is small, else
        the managed transfer's parallel ranged GETs, given the size and ETag so that each of
        them asks for that ETag (it otherwise pins the ETag of its own HEAD)."""
        import shutil

        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from s3transfer.exceptions import S3DownloadFailedError
        from s3transfer.subscribers import BaseSubscriber

        config = TransferConfig()
        size, now = self.stat(key)
        if now != version:
            raise self._changed(key, version)
        if size < config.multipart_threshold:
            body = self._s3.get_object(Bucket=self.bucket, Key=key, IfMatch=version)["Body"]
            shutil.copyfileobj(body, out, 1024 * 1024)
            return

        class Pinned(BaseSubscriber):
            def on_queued(self, future: Any, **kwargs: Any) -> None:
                future.meta.provide_transfer_size(size)
                future.meta.provide_object_etag(version)

        with create_transfer_manager(self._s3, config) as manager:
            try:
                manager.download(self.bucket, key, out, subscribers=[Pinned()]).result()
            except S3DownloadFailedError as exc:  # raised over the part's 412, among others
                refused = self._refused(exc.__context__ or exc, key, version)
                if isinstance(refused, ObjectChanged):
                    raise refused from None
                raise

    def read_range(self, key: str, start: int, end: int, version: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        if end <= start:
            return b""
        pinned = {} if version is None else {"IfMatch": version}
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key, **pinned,
                                       Range=f"bytes={start}-{end - 1}")["Body"].read()
        except ClientError as exc:
            raise self._refused(exc, key, version) from None

    def size(self, key: str) -> int:
        return self.stat(key)[0]

    def stat(self, key: str) -> tuple[int, str | None]:
        from botocore.exceptions import ClientError

        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise self._refused(exc, key, None) from None
        etag = head.get("ETag")  # S3 always sends one; a look-alike store may not
        return int(head["ContentLength"]), None if etag is None else str(etag)

    @property
    def client(self) -> Any:
        """The boto3 S3 client (presigned URLs and multipart uploads: common/uploads.py)."""
        return self._s3

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def listing(self, prefix: str) -> list[tuple[str, datetime]]:
        out: list[tuple[str, datetime]] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            out.extend((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []))
        return sorted(out)

    def remove_temporary(self, older_than: datetime) -> list[str]:
        """Nothing: a PUT is atomic (abandoned multipart uploads expire by the bucket's rule)."""
        return []

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (local emulators; SAM creates it on AWS)."""
        from botocore.exceptions import ClientError

        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._s3.create_bucket(Bucket=self.bucket)
