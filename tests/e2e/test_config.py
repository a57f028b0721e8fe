"""`openi2v serve` on a configuration that could only fail: it exits at once, before starting an
API process or a worker, with one line naming the setting to fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from openi2v.config import KLING_MODEL
from openi2v.engines.registry import gpu_available
from tests.e2e.server import env_for, free_port

pytestmark = pytest.mark.e2e
PRESET = "wan2.2-ti2v-5b-turbo"


def serve(tmp_path, *python: str, **settings: str) -> str:
    """Run `openi2v serve` (after ``python`` statements, if any) and return its one line on stderr,
    asserting it failed and printed nothing on stdout: no banner, so nothing was started."""
    env = env_for(tmp_path, HF_HOME=str(tmp_path / "hf"), **settings)  # an empty Hugging Face cache
    for name in [n for n in env if n.startswith("AWS_") and n not in settings]:  # boto3's chain: only what is given
        del env[name]
    argv = ["serve", "--port", str(free_port())]
    cmd = [sys.executable, "-c", "; ".join([*python, "from openi2v.cli import app", f"app({argv!r})"])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # the timeout: a hang guard
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def engine(name: str) -> str:
    return json.dumps({KLING_MODEL: name})


def test_an_unknown_engine_is_named(tmp_path):
    line = serve(tmp_path, OPENI2V_ENGINES=engine("bogus"))
    assert line.startswith(f"error: OPENI2V_ENGINES: unknown engine 'bogus' for model {KLING_MODEL}; choose motion")


@pytest.mark.parametrize("variable,value,message", [
    ("OPENI2V_LEASE_S", "soon", "error: OPENI2V_LEASE_S: input should be a valid number"),
    ("OPENI2V_ENGINES", "{not json", "error: OPENI2V_ENGINES: cannot parse the value"),
    ("OPENI2V_ENGINES", json.dumps({KLING_MODEL: 7}), "error: OPENI2V_ENGINES: input should be a valid string"),
    ("OPENI2V_AUTO_PRESET", "wan9", "error: OPENI2V_AUTO_PRESET: unknown preset 'wan9'"),
    ("OPENI2V_DATABASE_URL", "not a url", "error: OPENI2V_DATABASE_URL: ArgumentError: Could not parse"),
    ("OPENI2V_DATA_DIR", "/dev/null/data", "error: OPENI2V_DATA_DIR: [Errno 20] Not a directory"),
    ("OPENI2V_STORAGE", "s3", "error: OPENI2V_S3_BUCKET: value error, must be set for s3 storage"),
    ("OPENI2V_FORWARDED_ALLOW_IPS", "10.0.0.1/8", "error: OPENI2V_FORWARDED_ALLOW_IPS: value error, '10.0.0.1/8' is"),
])
def test_a_malformed_setting_is_named(tmp_path, variable, value, message):
    assert serve(tmp_path, **{variable: value}).startswith(message)


def test_a_bucket_without_credentials_to_sign_with_is_named(tmp_path):
    line = serve(tmp_path, OPENI2V_STORAGE="s3", OPENI2V_S3_BUCKET="videos", AWS_CONFIG_FILE="/dev/null",
                 AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
    assert line == ("error: OPENI2V_STORAGE: s3, but cannot sign URLs for the bucket (NoCredentialsError): give "
                    "boto3 credentials (AWS_ACCESS_KEY_ID..., a profile or a role)")


@pytest.mark.parametrize("path,reason", [
    ("no_such_module:Engine", "(ModuleNotFoundError: No module named 'no_such_module')"),
    ("tests.engine_fixtures:Missing", "(AttributeError: module 'tests.engine_fixtures' has no attribute 'Missing')"),
])
def test_an_engine_class_that_does_not_import_is_named(tmp_path, path, reason):
    line = serve(tmp_path, OPENI2V_ENGINES=engine(path))
    assert line == f"error: OPENI2V_ENGINES: cannot build engine '{path}' {reason}"


def test_a_preset_without_weights_cannot_start(tmp_path):
    line = serve(tmp_path, OPENI2V_ENGINES=engine(PRESET))
    where = tmp_path / "weights" / PRESET
    assert line.startswith(f"error: OPENI2V_ENGINES: preset {PRESET} has no weights in {where} or the Hugging Face cache")
    assert line.endswith(f"run `openi2v models pull {PRESET}` (or set OPENI2V_WEIGHTS_DIR)")


def test_a_preset_without_diffusers_cannot_start(tmp_path):
    line = serve(tmp_path, "import sys", "sys.modules['diffusers'] = None",  # as if it were not installed
                 OPENI2V_ENGINES=engine(PRESET))
    assert line == (f"error: OPENI2V_ENGINES: preset {PRESET} needs diffusers, not installed here: "
                    "pip install -e '.[diffusion]'")


def test_a_preset_on_a_missing_gpu_cannot_start(tmp_path):
    if gpu_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "weights" / PRESET).mkdir(parents=True)
    (tmp_path / "weights" / PRESET / "model_index.json").write_text("{}")
    line = serve(tmp_path, OPENI2V_ENGINES=engine(PRESET), OPENI2V_DEVICE="cuda")
    assert line.startswith(f"error: OPENI2V_DEVICE: cuda, but this machine has no CUDA GPU for preset {PRESET}")
