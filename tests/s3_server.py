"""An S3 API on localhost for the object-storage tests: moto's server mode in a thread of the test process, reached
through s3fs the way production reaches S3 -- the endpoint and the credentials come from the standard AWS
environment variables, nothing in the code knows it is talking to a test server.

Fixtures (import them into a test module by name):

- ``moto_s3``: the session's server (``http://127.0.0.1:<free port>``);
- ``s3``: a fresh, empty bucket for one test, with the AWS environment pointed at the server and s3fs's instance
  cache cleared before and after (an instance made for another endpoint or bucket state is never reused). It is
  an :class:`S3` helper: ``s3.uri`` is ``s3://<bucket>``, ``s3.client`` a boto3 client for setting things up
  behind the platform's back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

_BUCKETS = itertools.count()


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any  # boto3 S3 client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}"

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (straight from the server, no client-side cache)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def age(self, key: str, seconds: float) -> None:
        """Make an object look ``seconds`` older (S3 has no utime): moto's in-process backend holds the object's
        LastModified, which is what a listing reports."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        obj = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(self.bucket, key)
        assert obj is not None, f"no object s3://{self.bucket}/{key}"
        obj.last_modified -= dt.timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_s3, monkeypatch, tmp_path) -> Iterator[S3]:
    import boto3
    import s3fs

    # What an operator sets for an S3-compatible store (MinIO, Ceph, moto): botocore and aiobotocore, hence
    # s3fs, read the endpoint from AWS_ENDPOINT_URL. Dummy credentials; no profile, config file or proxy is read.
    for name, value in {
        "AWS_ENDPOINT_URL": moto_s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "HTTP_PROXY", "HTTPS_PROXY",
                 "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = f"evergreen-test-{next(_BUCKETS)}"
    client.create_bucket(Bucket=bucket)
    try:
        yield S3(moto_s3, bucket, client)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
