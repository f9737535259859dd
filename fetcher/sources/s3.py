"""s3:// models: every object under a prefix, through boto3, pinned by the listing's ETags.

Custom endpoints (MinIO, Ceph RGW, ...) come from AWS_ENDPOINT_URL; credentials from boto3's default
chain (static keys from the Secret first, then IRSA web identity, then instance roles). We make our own
ranged GETs with IfMatch=<ETag>, so an object replaced mid-download fails instead of mixing versions,
and a partial file resumes after a crash. Checksums are turned down to "when required", which
S3-compatible servers accept; a FULL_OBJECT sha256 checksum, where the object has one, is verified.
botocore makes one attempt per call: fetcher.retrying is the one retry policy, so a failing object costs
MODELCACHE_RETRIES requests, not that times botocore's own attempts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from fetcher.plan import Plan, RemoteFile
from fetcher.retrying import RetryableError
from fetcher.sources import matches_include
from modelcache.cache.markers import check_remote_path
from modelcache.contract.errors import AccessDeniedError, NotFoundError, TransferError
from modelcache.contract.sources import S3Source

CHUNK = 4 << 20  # per read: fewer Python round trips; memory stays workers x 4 MiB
_ACCESS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_RETRY = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "500", "502", "503", "504"}


class S3Adapter:
    def __init__(
        self,
        source: S3Source,
        *,
        include: tuple[str, ...],
        environ: Mapping[str, str],
        workers: int,
        connect_timeout: float,
        read_timeout: float,
        secret_hint: str,
    ) -> None:
        self.source = source
        self.include = include
        self.workers = workers
        self.secret_hint = secret_hint
        custom_endpoint = bool(environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"))
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=max(workers * 2, 10),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={
                "addressing_style": environ.get("MODELCACHE_S3_ADDRESSING_STYLE")
                or ("path" if custom_endpoint else "auto")
            },
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: Any = boto3.session.Session().client("s3", config=config)
        self.endpoint = str(self.client.meta.endpoint_url)

    def resolve(self) -> Plan:
        prefix = self.source.prefix + "/" if self.source.prefix else ""
        objects: list[dict[str, Any]] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.source.bucket, Prefix=prefix):
                objects.extend(page.get("Contents", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise self._translate(err, f"listing {self.source.uri} at {self.endpoint}") from err
        wanted = []
        for obj in objects:
            key = obj["Key"]
            if key.endswith("/"):
                continue  # a "directory" marker
            path = check_remote_path(key[len(prefix) :], source=self.source.uri)
            if not matches_include(path, self.include):
                continue
            wanted.append((path, key, int(obj["Size"]), obj.get("ETag")))
        if not wanted:
            what = "no objects" if not objects else f"no object matching {','.join(self.include)}"
            raise NotFoundError(f"there are {what} under {self.source.uri}; check the bucket and prefix")
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            checksums = list(pool.map(lambda item: self._sha256_of(item[1], item[3]), wanted))
        files = tuple(
            RemoteFile(path=path, size=size, sha256=sha, locator=key, etag=etag)
            for (path, key, size, etag), sha in zip(wanted, checksums, strict=True)
        )
        manifest = json.dumps([(f.path, f.size, f.etag) for f in files], sort_keys=True)
        return Plan(version=hashlib.sha256(manifest.encode()).hexdigest()[:16], files=files)

    def open(self, file: RemoteFile, offset: int, end: int | None = None) -> tuple[int, Iterator[bytes]]:
        args: dict[str, Any] = {"Bucket": self.source.bucket, "Key": file.locator}
        if file.etag:
            args["IfMatch"] = file.etag
        if offset or end is not None:
            args["Range"] = f"bytes={offset}-{'' if end is None else end}"
        try:
            response = self.client.get_object(**args)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise self._translate(
                err, f"downloading s3://{self.source.bucket}/{file.locator} from {self.endpoint}"
            ) from err
        start = offset if "ContentRange" in response else 0
        return start, self._chunks(response["Body"], file)

    def close(self) -> None:
        self.client.close()

    def _chunks(self, body: Any, file: RemoteFile) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (botocore.exceptions.BotoCoreError, OSError) as err:
            raise RetryableError(f"s3://{self.source.bucket}/{file.locator}: the download broke off ({err})") from err
        finally:
            body.close()

    def _sha256_of(self, key: str, etag: str | None) -> str | None:
        """The object's full-object sha256 checksum, if it has one (base64 in S3, hex for us)."""
        try:
            head = self.client.head_object(Bucket=self.source.bucket, Key=key, ChecksumMode="ENABLED")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            what = f"reading the metadata of s3://{self.source.bucket}/{key} at {self.endpoint}"
            raise self._translate(err, what) from err
        value = head.get("ChecksumSHA256")
        if not value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT" or "-" in value:
            return None
        return base64.b64decode(value).hex()

    def _translate(self, err: Exception, what: str) -> Exception:
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return AccessDeniedError(
                f"{what}: no AWS credentials found. Put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
                f"{self.secret_hint}, or give the pod's service account an IAM role (IRSA / Pod Identity)."
            )
        if isinstance(err, botocore.exceptions.ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _ACCESS or status == "403":
                return AccessDeniedError(
                    f"{what}: access denied ({code}). Check the credentials in {self.secret_hint} or the IAM role "
                    "of the pod's service account, and the bucket policy."
                )
            if code in _MISSING or status == "404":
                return NotFoundError(f"{what}: not found ({code}); check the bucket and prefix")
            if code in ("PreconditionFailed", "412") or status == "412":
                return TransferError(
                    f"{what}: the object changed since it was listed; the pod will retry and fetch the new version"
                )
            if code in _RETRY or status.startswith("5"):
                return RetryableError(f"{what}: {code or status}")
            return TransferError(f"{what}: {code or status}: {err}")
        return RetryableError(f"{what}: {type(err).__name__}: {err}")
