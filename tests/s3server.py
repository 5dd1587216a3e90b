"""A real S3-compatible server on 127.0.0.1 for the object-storage tests (issue #16).

The server is moto's standalone server (``python -m moto.server``), run as a separate
process so that dask worker processes, GDAL and any other client reach it over HTTP like
a real object store. Nothing in the client is mocked. Credentials are checked: after a
short unauthenticated setup (one IAM user, its access key and an ``s3:*`` policy) the
server is switched to enforce SigV4 signatures, so a wrong secret or an unknown key is
refused with ``SignatureDoesNotMatch`` / ``InvalidAccessKeyId`` as on AWS.

Use from a test module (the fixtures are named ``s3_server`` and ``s3_bucket``; the
``_fixture`` suffix keeps ruff from seeing the parameters as redefinitions)::

    from tests.s3server import s3_bucket_fixture, s3_server_fixture  # noqa: F401

    def test_round_trip(s3_bucket):
        store = zarr.storage.FsspecStore.from_url(
            s3_bucket.url("x.zarr"), storage_options=s3_bucket.storage_options
        )
        ...
        assert "x.zarr/zarr.json" in s3_bucket.keys()

or make them available to every test with that import in ``tests/conftest.py``.

Needs ``moto[s3]``, ``flask`` and ``flask-cors`` (the server) and ``boto3`` (the helpers,
a dependency of moto); the fixtures skip the test when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
START_TIMEOUT = 20.0
"""Seconds to wait for the server to answer before failing with its log."""

# The child runs moto's server and exits when its parent (the test process) dies, so a
# killed pytest leaves no server behind. The parent's pid is passed in argv.
_LAUNCHER = """
import os, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[2:])
"""

# Talk to 127.0.0.1 directly even where HTTP_PROXY is set.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fast_config() -> Any:
    import botocore.config

    return botocore.config.Config(
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 1, "mode": "standard"},
    )


@dataclass
class S3Server:
    """A running moto server: its endpoint, the credentials it accepts, its process."""

    endpoint_url: str
    key: str
    secret: str
    process: subprocess.Popen[bytes]
    log_path: Path
    region: str = REGION

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (one attempt, short timeouts)."""
        import boto3

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.key,
            "aws_secret_access_key": self.secret,
            "region_name": self.region,
            "config": _fast_config(),
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def log_tail(self, nbytes: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-nbytes:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate ``proc``, kill it if it is still alive after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once ``url`` answers; the reason if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"the server exited with code {proc.returncode}"
        try:
            with _OPENER.open(url, timeout=1) as r:
                r.read()
            return None
        except urllib.error.HTTPError:
            return None  # it answered
        except OSError:
            pass
        if time.monotonic() > deadline:
            return f"no answer from {url} within {timeout:.0f} s"
        time.sleep(0.1)


def start_s3_server(
    log_dir: Path, *, timeout: float = START_TIMEOUT, check_credentials: bool = True
) -> S3Server:
    """Start moto's server on a free 127.0.0.1 port; raise RuntimeError within ``timeout``.

    With ``check_credentials`` (the default) the server then enforces signatures, and
    only the returned ``key``/``secret`` are accepted.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    reason = ""
    for attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log_path = log_dir / f"moto-{port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), "-H", "127.0.0.1"]
                + ["-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = S3Server(endpoint, "testing", "testing", proc, log_path)
        reason = _wait_ready(f"{endpoint}/moto-api/data.json", proc, timeout) or ""
        if not reason:
            break
        stop_process(proc)
        if "Address already in use" not in server.log_tail() or attempt == 2:
            raise RuntimeError(
                f"S3 test server (moto) did not start: {reason}\n"
                f"command: {proc.args!r}\nlog {log_path}:\n{server.log_tail()}"
            )
    try:
        if check_credentials:
            _enable_auth(server)
    except Exception:
        stop_process(server.process)
        raise
    return server


def _enable_auth(server: S3Server) -> None:
    """Create an IAM user with an s3:* key, then make the server check every signature."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint_url,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        region_name=server.region,
        config=_fast_config(),
    )
    iam.create_user(UserName="bigimg-test")
    iam.put_user_policy(UserName="bigimg-test", PolicyName="s3-all", PolicyDocument=_POLICY)
    access = iam.create_access_key(UserName="bigimg-test")["AccessKey"]
    server.key = access["AccessKeyId"]
    server.secret = access["SecretAccessKey"]
    request = urllib.request.Request(
        f"{server.endpoint_url}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with _OPENER.open(request, timeout=5) as r:
        r.read()


@dataclass
class S3Bucket:
    """One bucket on the server, with what clients need to reach it."""

    server: S3Server
    name: str
    _client: Any = field(default=None, repr=False)

    def url(self, prefix: str = "") -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.name}/{prefix.lstrip('/')}"

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options: ``fsspec.filesystem("s3", **storage_options)``.

        A fresh dict each time; add e.g. ``"config_kwargs": {"connect_timeout": 2,
        "retries": {"max_attempts": 1}}`` to make a failing endpoint fail fast.
        """
        return {
            "key": self.server.key,
            "secret": self.server.secret,
            "endpoint_url": self.server.endpoint_url,
            "client_kwargs": {"region_name": self.server.region},
        }

    @property
    def obstore_config(self) -> dict[str, Any]:
        """Keyword arguments for ``obstore.store.S3Store(bucket.name, **obstore_config)``."""
        return {
            "config": {
                "access_key_id": self.server.key,
                "secret_access_key": self.server.secret,
                "endpoint": self.server.endpoint_url,
                "region": self.server.region,
                "virtual_hosted_style_request": False,
            },
            "client_options": {"allow_http": True},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs, obstore and GDAL at the server.

        Merge into a subprocess's environment: ``{**os.environ, **bucket.env}``.
        """
        host = self.server.endpoint_url.removeprefix("http://")
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1"]))
        return {
            "AWS_ACCESS_KEY_ID": self.server.key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret,
            "AWS_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_DEFAULT_REGION": self.server.region,
            "AWS_REGION": self.server.region,
            "AWS_ALLOW_HTTP": "true",  # obstore
            "AWS_S3_ENDPOINT": host,  # GDAL /vsis3/
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    @property
    def client(self) -> Any:
        """A boto3 S3 client (created once)."""
        if self._client is None:
            self._client = self.server.client()
        return self._client

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, sorted."""
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        for page in pages:
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(out)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def corrupt(self, key: str, offset: int = -1, nbytes: int = 1) -> None:
        """Flip ``nbytes`` bytes of object ``key`` from ``offset`` (default: the last byte).

        The object keeps its length, so only a checksum can notice.
        """
        data = bytearray(self.get(key))
        if not data:
            raise ValueError(f"{key} is empty")
        start = offset % len(data)
        for i in range(start, min(start + nbytes, len(data))):
            data[i] ^= 0xFF
        self.put(key, bytes(data))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def clear(self) -> None:
        """Delete every object in the bucket."""
        keys = self.keys()
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.name,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )


def create_bucket(server: S3Server, name: str | None = None) -> S3Bucket:
    """A new, empty bucket (a unique name unless ``name`` is given)."""
    bucket = S3Bucket(server, name or f"test-{uuid.uuid4().hex[:16]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket


def remove_bucket(bucket: S3Bucket) -> None:
    bucket.clear()
    bucket.client.delete_bucket(Bucket=bucket.name)


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """An ``http://127.0.0.1:PORT`` that accepts connections and never answers.

    The counterpart of a refused port (``f"http://127.0.0.1:{free_port()}"``): clients
    hang there until their read timeout, like behind a stalled proxy.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def _require_server_packages() -> None:
    for module in ("moto.server", "flask", "flask_cors", "boto3"):
        pytest.importorskip(module, reason=f"the S3 test server needs {module}")


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server on 127.0.0.1 for the whole session."""
    _require_server_packages()
    server = start_s3_server(tmp_path_factory.mktemp("s3server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh bucket for one test, emptied and removed afterwards."""
    bucket = create_bucket(s3_server)
    try:
        yield bucket
    finally:
        if s3_server.process.poll() is None:
            remove_bucket(bucket)
