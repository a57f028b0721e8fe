"""A real S3 endpoint for tests: moto's server in a subprocess on a free loopback port, spoken to over
HTTP exactly as a bucket would be. A test module takes both fixtures by importing them:

    from tests.s3_server import s3_bucket, s3_endpoint  # noqa: F401 (fixtures)

When the server cannot start the tests skip, saying why; with OPENI2V_TEST_REQUIRE_SERVERS=1 (as CI
sets) they fail instead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from tests.e2e.server import free_port

START_S = 30
# Fake credentials, and nothing of the machine's own AWS set-up (a profile, a role) in their way.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "AWS_EC2_METADATA_DISABLED": "true"}
UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str
    client: object  # a boto3 S3 client on the endpoint, to look behind the storage's back

    def names(self) -> list[str]:
        """Every object name in the bucket."""
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(o["Key"] for o in listing.get("Contents", []))


def _unavailable(reason: str) -> None:
    if os.environ.get("OPENI2V_TEST_REQUIRE_SERVERS") == "1":
        pytest.fail(f"S3 test server: {reason} (OPENI2V_TEST_REQUIRE_SERVERS=1)")
    pytest.skip(f"S3 test server: {reason}")


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> str | None:
    """None once the server answers; else why it never will."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"moto.server exited ({proc.returncode}): {log.read_text()[-2000:]}"
        try:
            httpx.get(url, timeout=1)
            return None
        except httpx.HTTPError:
            time.sleep(0.1)
    return f"moto.server did not answer within {START_S} s: {log.read_text()[-2000:]}"


@pytest.fixture(scope="session")
def s3_endpoint():
    """The endpoint URL of a moto server started for this test session (and killed after it), with
    fake credentials in this process's environment for every boto3 client the tests build."""
    url = f"http://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="openi2v-moto-") as tmp, pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        for name in UNSET:
            env.delenv(name, raising=False)
        log = Path(tmp) / "moto.log"
        with open(log, "wb") as out:
            argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            if (why := _wait_until_up(proc, url, log)) is not None:
                _unavailable(why)
            yield url
        finally:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint) -> Bucket:
    """A fresh, empty bucket on the session's server."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"t-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    return Bucket(s3_endpoint, name, client)
