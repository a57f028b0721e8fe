"""`openi2v models pull` and `openi2v.weights` against a fake Hub (tests/hub_server.py) speaking the
protocol huggingface_hub 2.4 uses: what a pull fetches and skips, resuming, hash checks, gated
repos, LoRAs, disk space, the status `models list` shows, and a pulled preset generating video."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from openi2v import weights
from openi2v.weights import INDEX
from openi2v.weights.pull import _Display as Display
from openi2v.config import Settings
from openi2v.engines import registry
from openi2v.engines.catalog import BUILT_IN, Lora
from openi2v.media.video import probe
from tests import pictures, tiny_models
from tests.hub_server import FakeHub, git_blob_sha1

FIVE_B = BUILT_IN["wan2.2-ti2v-5b"]
SHARD = "transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
LAST_SHARD = "transformer/diffusion_pytorch_model-00002-of-00002.safetensors"
NOT_READ = {  # beside the pipeline in the repo; from_pretrained reads none of them
    "wan2.2_ti2v_5B_fp16.safetensors": 300_000,  # the original-format checkpoint at the root
    "README.md": 40, "assets/cover.png": 2_000,
    "transformer/diffusion_pytorch_model.bin": 50_000,  # a pickle beside the safetensors
    "vae/diffusion_pytorch_model.fp16.safetensors": 40_000,  # a variant beside the plain file
    "text_encoder/flax_model.msgpack": 30_000,
}
HUB_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")


@dataclass(frozen=True)
class TinyRepo:
    directory: Path
    pipeline: dict[str, bytes]  # what save_pretrained wrote: the files a pull must fetch


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> TinyRepo:
    """The tiny TI2V-5B pipeline with its big models sharded, and files a pull must leave behind."""
    directory = tmp_path_factory.mktemp("repo")
    tiny_models.build("wan2.2-5b").save_pretrained(directory, max_shard_size="100KB")
    pipeline = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    assert SHARD in pipeline and LAST_SHARD in pipeline
    rng = random.Random(0)
    for name, size in NOT_READ.items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(rng.randbytes(size))
    return TinyRepo(directory, pipeline)


@pytest.fixture
def hub(tiny_repo):
    with FakeHub(tokens=("hf_granted", "hf_other")) as fake:
        fake.add(FIVE_B.repo, tiny_repo.directory)
        yield fake


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings for pulls in this process, and huggingface_hub online, with an empty cache and no
    token of this machine's (tests/tiny_models.py turned it offline when it was imported)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    for name in HUB_ENV:
        monkeypatch.delenv(name, raising=False)
    return Settings(data_dir=tmp_path / "data")


def cli(tmp_path, hub, *args, **env):
    """`openi2v ARGS` as a user runs it, with HF_ENDPOINT at the fake hub and nothing of this machine's
    Hugging Face set-up (its cache, its token, the offline switch tests/tiny_models.py set)."""
    environ = {k: v for k, v in os.environ.items() if k not in HUB_ENV}
    environ.update(OPENI2V_DATA_DIR=str(tmp_path / "data"), HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), **env)
    return subprocess.run([sys.executable, "-m", "openi2v.cli", *args], env=environ, capture_output=True, text=True)


def one_line_error(out, *expected: str) -> str:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download"), out.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def served_bytes(hub, file: str) -> int:
    return sum(s.sent for s in hub.downloads() if s.file == file)


def target(settings) -> Path:
    return settings.weights_root / FIVE_B.weights_name


def test_a_pull_fetches_exactly_the_files_the_pipeline_loads(settings, hub, tiny_repo, monkeypatch):
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert {s.file for s in hub.file_requests()} == set(tiny_repo.pipeline)  # nothing of NOT_READ, not even a HEAD
    for name, data in tiny_repo.pipeline.items():
        assert (target(settings) / name).read_bytes() == data
        # each once; model_index.json also for the plan
        assert served_bytes(hub, name) == len(data) * (2 if name == "model_index.json" else 1), name
    on_disk = {p.relative_to(target(settings)).as_posix() for p in target(settings).rglob("*")
               if p.is_file() and not p.relative_to(target(settings)).parts[0].startswith(".")}
    assert on_disk == set(tiny_repo.pipeline)
    assert weights.status(settings, FIVE_B).state == "present"

    manifest = target(settings) / ".openi2v" / "manifest.json"
    files = json.loads(manifest.read_text())["files"]
    assert set(files) == set(tiny_repo.pipeline) and all(e["verified"] for e in files.values())
    manifest.write_text(json.dumps({"files": {**files, "gone.safetensors": {**files[SHARD], "verified": None}}}))

    before = len(hub.file_requests())
    monkeypatch.setattr(weights.Remote, "mismatch", lambda r: pytest.fail(f"{r.path} hashed again"))
    weights.pull(settings, FIVE_B, endpoint=hub.url)  # verified and unchanged: nothing fetched, hashed or asked
    assert [s.file for s in hub.file_requests()[before:]] == ["model_index.json", "model_index.json"]  # the plan's
    assert set(json.loads(manifest.read_text())["files"]) == set(tiny_repo.pipeline)  # what the repo no longer has


def test_a_pull_cut_off_mid_file_resumes_with_a_range_and_ends_verified(settings, hub, tiny_repo, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB) and resumes after the
    # last whole one: a small chunk makes the tiny shard resumable mid-file, as a real shard is
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    hub.cut[SHARD] = 8192
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    gets = [s for s in hub.downloads() if s.file == SHARD]
    size = len(tiny_repo.pipeline[SHARD])
    assert [(s.range, s.status, s.sent) for s in gets] == [(None, 200, 8192), ("bytes=8192-", 206, size - 8192)]
    assert (target(settings) / SHARD).read_bytes() == tiny_repo.pipeline[SHARD]
    manifest = json.loads((target(settings) / ".openi2v" / "manifest.json").read_text())["files"]
    assert manifest[SHARD]["verified"] == [size, (target(settings) / SHARD).stat().st_mtime_ns]


def partials(settings) -> dict[str, int]:
    """The downloads under way a pull keeps across runs: their paths and sizes."""
    where = target(settings) / ".openi2v" / "partial"
    return {p.relative_to(where).as_posix(): p.stat().st_size for p in where.rglob("*") if p.is_file()}


def fail_at(settings, hub, file: str, n: int, monkeypatch) -> None:
    """A pull that stops for good after ``n`` bytes of ``file``: the connection drops and the hub answers
    500 for it, more than huggingface_hub's retries ride out."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # as above: whole chunks reach the disk
    hub.quota[file] = n
    with pytest.raises(weights.PullError) as failed:
        weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert str(failed.value) == (f"{hub.url} answered 500 for {FIVE_B.repo}: Server error '500 Internal Server Error' "
                                 f"for url '{hub.cdn}/{FIVE_B.repo}/{hub.repos[FIVE_B.repo].commit}/{file}'")
    assert [(s.range, s.status, s.sent) for s in hub.log if s.method == "GET" and s.file == file] == [
        (None, 200, n), (f"bytes={n}-", 500, 0)]  # resumed within the run, refused
    assert not (target(settings) / file).exists()
    hub.quota.clear()


def test_a_pull_stopped_for_good_resumes_in_the_next_run_where_it_stopped(settings, hub, tiny_repo, monkeypatch):
    size = len(tiny_repo.pipeline[SHARD])
    fail_at(settings, hub, SHARD, 8192, monkeypatch)
    assert partials(settings) == {f"{SHARD}/{hub.repos[FIVE_B.repo].sibling(SHARD)['lfs']['sha256']}": 8192}

    shown = []  # the file's bar and the total as the first resumed bytes arrive: both count the 8192 as done
    advance = Display._advance
    monkeypatch.setattr(Display, "_advance", lambda show, n: (
        advance(show, n), shown.append(tuple(t.completed for t in show.bars.tasks if t.id in (show.task, show.total)))))
    before = len(hub.log)
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert [(s.range, s.status, s.sent) for s in hub.log[before:] if s.method == "GET" and s.file == SHARD] == [
        ("bytes=8192-", 206, size - 8192)]
    assert served_bytes(hub, SHARD) == size  # over both runs: no byte twice
    assert shown[0] == (8192 + 4096, 8192 + 4096)  # the shard is the first file left to fetch
    assert (target(settings) / SHARD).read_bytes() == tiny_repo.pipeline[SHARD]
    assert json.loads((target(settings) / ".openi2v" / "manifest.json").read_text())["files"][SHARD]["verified"]
    assert weights.status(settings, FIVE_B).state == "present"
    assert not (target(settings) / ".openi2v" / "partial").exists()


def test_a_partial_of_another_revision_is_deleted_and_the_file_fetched_from_zero(settings, hub, tiny_repo,
                                                                                 monkeypatch):
    fail_at(settings, hub, SHARD, 8192, monkeypatch)
    assert list(partials(settings).values()) == [8192]
    changed = tiny_repo.pipeline[SHARD][:8192] + bytes(b ^ 0xFF for b in tiny_repo.pipeline[SHARD][8192:])
    hub.add(FIVE_B.repo, tiny_repo.directory, files={SHARD: changed})  # a new commit: the shard's ETag changed
    before = len(hub.log)
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert [(s.range, s.status, s.sent) for s in hub.log[before:] if s.method == "GET" and s.file == SHARD] == [
        (None, 200, len(changed))]
    assert (target(settings) / SHARD).read_bytes() == changed
    assert partials(settings) == {}


def test_a_pull_deletes_the_temporary_files_huggingface_hub_left_behind(settings, hub):
    left = target(settings) / ".cache" / "huggingface" / "download" / "transformer"
    left.mkdir(parents=True)
    (left / "diffusion_pytorch_model.safetensors.0123abcd.5f3e2a1b.incomplete").write_bytes(b"x" * 5000)
    (left / "config.json.metadata").write_text("its own bookkeeping")
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert [p.name for p in left.iterdir()] == ["config.json.metadata"]


def test_a_corrupt_download_is_fetched_once_more(settings, hub, tiny_repo):
    hub.corrupt[SHARD] = 1  # an LFS file: checked by sha256
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert [s.sent for s in hub.downloads() if s.file == SHARD] == [len(tiny_repo.pipeline[SHARD])] * 2
    assert (target(settings) / SHARD).read_bytes() == tiny_repo.pipeline[SHARD]
    assert weights.status(settings, FIVE_B).state == "present"


def test_a_file_corrupt_twice_fails_the_pull_naming_it_and_a_re_pull_fetches_only_the_unverified(settings, hub,
                                                                                               tiny_repo):
    config = "transformer/config.json"  # a git file: checked by its blob sha1
    hub.corrupt[config] = float("inf")
    good = tiny_repo.pipeline[config]
    bad = bytes(b ^ 0xFF for b in good[:64]) + good[64:]
    with pytest.raises(weights.PullError) as failed:
        weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert str(failed.value) == (f"{config} from {FIVE_B.repo} is corrupt after two downloads: expected git blob "
                                 f"sha1 {git_blob_sha1(good)}, got {git_blob_sha1(bad)}")
    assert len([s for s in hub.downloads() if s.file == config]) == 2
    assert not (target(settings) / config).exists()
    assert weights.status(settings, FIVE_B).state == "partial"
    assert registry.local_weights(settings, FIVE_B) is None  # model_index.json comes last: not taken as loadable

    hub.corrupt.clear()
    before = len(hub.file_requests())
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    # the files before it in the plan were verified: only it and those after it (model_index.json last) are asked
    assert {s.file for s in hub.file_requests()[before:]} == {n for n in tiny_repo.pipeline if n >= config} | {
        "model_index.json"}
    assert weights.status(settings, FIVE_B).state == "present"


def test_a_gated_repo_needs_a_token_and_says_where_to_accept_the_licence(tmp_path, hub, tiny_repo):
    hub.add(FIVE_B.repo, tiny_repo.directory, gated=True, granted=("hf_granted",))
    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name)
    one_line_error(out, f"{FIVE_B.repo} is gated: accept its licence at {hub.url}/{FIVE_B.repo}", "HF_TOKEN")
    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name, HF_TOKEN="hf_bogus")
    one_line_error(out, "refused the token (401 Unauthorized): check HF_TOKEN")
    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name, HF_TOKEN="hf_other")  # a token that did not accept
    one_line_error(out, "is gated")
    assert hub.downloads() == []

    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name, HF_TOKEN="hf_granted")
    assert out.returncode == 0, out.stderr
    resolved = [s for s in hub.file_requests() if "/resolve/" in s.path]
    cdn = [s for s in hub.file_requests() if s.path.startswith("/cdn/")]
    assert resolved[-1].authorization == "Bearer hf_granted"
    assert cdn and all(s.authorization is None for s in cdn)  # the token never leaves the Hub


def test_a_lora_missing_from_its_repo_is_named_with_what_the_repo_holds(tmp_path, hub, tiny_repo):
    turbo = BUILT_IN["wan2.2-i2v-a14b-turbo"]
    hub.add(turbo.repo, tiny_repo.directory)  # the plan fails at the LoRA, before any pipeline file
    out = cli(tmp_path, hub, "models", "pull", turbo.name)
    one_line_error(out, f"LoRA repo {turbo.loras[0].repo} not found on {hub.url}")

    hub.add(turbo.loras[0].repo, files={"wan2.2_i2v_A14b_high_noise_lightx2v_4step_1030.safetensors": b"x" * 99,
                                        "wan2.2_i2v_A14b_low_noise_lightx2v_4step_1030.safetensors": b"y" * 99,
                                        "README.md": b"# LoRAs"})
    out = cli(tmp_path, hub, "models", "pull", turbo.name)
    one_line_error(out, f"LoRA file {turbo.loras[0].file} is not in {turbo.loras[0].repo}; it holds "
                        "wan2.2_i2v_A14b_high_noise_lightx2v_4step_1030.safetensors, "
                        "wan2.2_i2v_A14b_low_noise_lightx2v_4step_1030.safetensors")
    assert {s.file for s in hub.file_requests()} == {"model_index.json"}


def test_a_lora_lands_in_the_loras_folder_and_counts_in_the_status(settings, hub, tiny_repo):
    hub.add("team/loras", files={"style.safetensors": b"lora" * 1000})
    styled = replace(FIVE_B, name="styled", base=FIVE_B.name, loras=(Lora("team/loras", "style.safetensors"),))
    weights.pull(settings, styled, endpoint=hub.url)
    assert (settings.weights_root / "loras" / "style.safetensors").read_bytes() == b"lora" * 1000
    assert weights.status(settings, styled).state == "present"
    (settings.weights_root / "loras" / "style.safetensors").unlink()
    assert weights.status(settings, styled) == weights.WeightsStatus(
        "partial", weights.status(settings, FIVE_B).bytes_on_disk, ["loras/style.safetensors"], target(settings))


def test_too_little_disk_space_fails_before_any_weights_are_requested(settings, hub, tmp_path, monkeypatch):
    asked = []
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):
        asked.append(Path(path))
        return usage(10**12, 10**12 - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(weights.PullError) as failed:
        weights.pull(settings, FIVE_B, endpoint=hub.url)
    need = sum(len(d) for d in hub.repos[FIVE_B.repo].files.values()) - sum(NOT_READ.values())
    assert str(failed.value) == (f"not enough disk space: {need} bytes ({weights.size_text(need)}) to fetch, "
                                 f"1000 bytes (1.0 kB) free in {settings.weights_root}")
    assert settings.weights_root in asked  # the target's nearest existing parent (the pull's lock is there)
    assert {s.file for s in hub.file_requests()} == {"model_index.json"}  # the plan read it, nothing more
    assert [p.name for p in settings.weights_root.rglob("*")] == [".pull.lock"]


def test_one_pull_at_a_time_per_weights_directory(settings, hub):
    import fcntl

    settings.weights_root.mkdir(parents=True)
    with open(settings.weights_root / ".pull.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a pull running in another process holds it
        with pytest.raises(weights.PullError, match=f"^another `openi2v models pull` is writing to "
                                                    f"{settings.weights_root}: wait for it to finish$"):
            weights.pull(settings, FIVE_B, endpoint=hub.url)
        assert hub.file_requests() == []
    weights.pull(settings, FIVE_B, endpoint=hub.url)  # released: the pull goes on
    assert weights.status(settings, FIVE_B).state == "present"


def test_an_unknown_repo_and_a_hub_out_of_reach_are_one_sentence_each(settings, hub):
    with pytest.raises(weights.PullError, match=f"^repo nobody/nothing not found on {hub.url} "):
        weights.pull(settings, replace(FIVE_B, repo="nobody/nothing"), endpoint=hub.url)
    with pytest.raises(weights.PullError, match=r"^cannot reach http://127\.0\.0\.1:9: .*refused"):
        weights.pull(settings, FIVE_B, endpoint="http://127.0.0.1:9")


def test_a_local_path_preset_has_nothing_to_pull(tmp_path, hub):
    ours = tmp_path / "data" / "weights" / "ours"
    tiny_models.save("wan2.2-5b", ours)
    (tmp_path / "data" / "presets.toml").write_text(
        '[[preset]]\nname = "ours"\ninherit = "wan2.2-ti2v-5b"\npath = "weights/ours"\n')
    out = cli(tmp_path, hub, "models", "pull", "ours")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ours: nothing to pull for the pipeline: its weights are the local directory {ours}"
    assert hub.log == []
    rows = list_rows(cli(tmp_path, hub, "models", "list"))
    assert rows["ours"][7] == "present"  # judged from model_index.json: no manifest


def list_rows(out) -> dict[str, list[str]]:
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split("\t")[7:10] == ["weights", "on disk", "gpu memory"]
    return {line.split("\t")[0]: line.split("\t") for line in lines}


def test_models_list_says_present_partial_and_absent(tmp_path, hub, tiny_repo):
    assert cli(tmp_path, hub, "models", "pull", FIVE_B.name).returncode == 0
    where = tmp_path / "data" / "weights" / FIVE_B.name
    rows = list_rows(cli(tmp_path, hub, "models", "list"))
    assert rows[FIVE_B.name][7:9] == ["present", weights.size_text(sum(p.stat().st_size for p in where.rglob("*")
                                                                       if p.is_file()))]
    assert rows["ltx-video-0.9.8-distilled"][7:9] == ["absent", "0 B"]

    (where / LAST_SHARD).unlink()
    assert list_rows(cli(tmp_path, hub, "models", "list"))[FIVE_B.name][7] == "partial"
    shutil.rmtree(where / ".openi2v")  # without the manifest, judged from the shard index
    assert list_rows(cli(tmp_path, hub, "models", "list"))[FIVE_B.name][7] == "partial"
    assert weights.status(Settings(data_dir=tmp_path / "data"), FIVE_B).missing == [LAST_SHARD]


def test_a_pulled_preset_generates_video(tmp_path, hub, tiny_repo):
    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()  # not a terminal: a line per verified file, then where it all went
    assert sorted(lines[:-1]) == sorted(f"verified {FIVE_B.name}/{n} ({weights.size_text(len(d))})"
                                        for n, d in tiny_repo.pipeline.items())
    assert lines[-1].startswith(f"{FIVE_B.name}: {FIVE_B.repo} -> {tmp_path / 'data' / 'weights' / FIVE_B.name} ")
    photo = tmp_path / "photo.png"
    photo.write_bytes(pictures.png(640, 426))
    out = cli(tmp_path, hub, "generate", str(photo), "--prompt", "slow zoom in", "--model", FIVE_B.name,
              "--steps", "2", "--size", "64x32", "--device", "cpu", "-o", str(tmp_path / "out.mp4"))
    assert out.returncode == 0, out.stderr
    info = probe(tmp_path / "out.mp4")
    assert (info.frames, info.width, info.height) == (FIVE_B.frames, 64, 32)


def test_dry_run_prints_the_plan_and_downloads_nothing(tmp_path, hub, tiny_repo):
    out = cli(tmp_path, hub, "models", "pull", FIVE_B.name, "--dry-run")
    assert out.returncode == 0, out.stderr
    *files, total = out.stdout.splitlines()
    rows = {tuple(line.split("\t")) for line in files}
    assert rows == ({("fetch", f"{FIVE_B.name}/{n}", str(len(d))) for n, d in tiny_repo.pipeline.items()}
                    | {("skip", n, str(size)) for n, size in NOT_READ.items()})
    need = sum(len(d) for d in tiny_repo.pipeline.values())
    held = need + sum(NOT_READ.values())
    assert total == (f"to fetch: {len(tiny_repo.pipeline)} of {len(tiny_repo.pipeline)} files, {need} bytes "
                     f"({weights.size_text(need)}); the repo holds {held} bytes ({weights.size_text(held)}), "
                     f"{len(NOT_READ)} files skipped")
    assert {s.file for s in hub.file_requests()} == {"model_index.json"}
    assert not (tmp_path / "data" / "weights").exists()


def test_the_fake_hubs_blob_ids_are_gits():
    """The listing's blobId of a non-LFS file is git's blob sha1, as on the Hub (`git hash-object`)."""
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_a_listed_file_name_that_would_leave_its_folder_is_refused(settings, hub, tiny_repo):
    """A hostile mirror's listing cannot write outside the weights directory, nor over the manifest."""
    files = {p.relative_to(tiny_repo.directory).as_posix(): p.read_bytes()
             for p in tiny_repo.directory.rglob("*") if p.is_file()}
    for name in ("transformer/../../../escaped.json", "transformer/../.openi2v/manifest.json"):
        hub.add("evil/repo", files={**files, name: b"{}"})
        with pytest.raises(weights.PullError, match=f"^evil/repo lists a file name that would land outside its "
                                                    f"folder: '{name}'$"):
            weights.pull(settings, replace(FIVE_B, repo="evil/repo"), endpoint=hub.url)
    assert not (settings.weights_root.parent / "escaped.json").exists()


def test_a_new_revision_or_another_repo_leaves_no_stale_file_and_is_not_taken_for_present(settings, hub, tiny_repo,
                                                                                       monkeypatch):
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    # upstream re-shards the transformer into one file: the old shards and their index must go, or
    # from_pretrained would read the stale index and shards beside the new file
    single = {k: v for k, v in tiny_repo.pipeline.items() if not k.startswith("transformer/diffusion_pytorch_model")}
    single["transformer/diffusion_pytorch_model.safetensors"] = tiny_repo.pipeline[SHARD]  # bytes only matter here
    hub.add(FIVE_B.repo, files=single)
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    transformer = sorted(p.name for p in (target(settings) / "transformer").iterdir())
    assert transformer == ["config.json", "diffusion_pytorch_model.safetensors"]

    # the same directory now asked to hold a fine-tune from another repo: not present until pulled
    ours = replace(FIVE_B, repo="our/finetune")
    monkeypatch.setattr("openi2v.engines.catalog.BUILT_IN", {**BUILT_IN, FIVE_B.name: ours})
    found = weights.status(settings, ours)
    assert found.state == "absent" and "model_index.json (from Wan-AI/Wan2.2-TI2V-5B-Diffusers)" in found.missing
    hub.add("our/finetune", files=single)
    weights.pull(settings, ours, endpoint=hub.url)
    assert weights.status(settings, ours).state == "present"


def test_a_file_changed_after_it_was_verified_is_not_present_and_is_fetched_again(settings, hub, tiny_repo):
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    shard = target(settings) / SHARD
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))  # same size, one byte flipped
    found = weights.status(settings, FIVE_B)
    assert found.state == "partial" and found.missing == [SHARD]
    the_plan = weights.plan(settings, FIVE_B, endpoint=hub.url)  # what --dry-run prints
    assert [r.path for r in weights.to_fetch(settings, FIVE_B, the_plan)] == [SHARD]
    assert the_plan.lines(weights.to_fetch(settings, FIVE_B, the_plan))[-1].startswith(
        f"to fetch: 1 of {len(tiny_repo.pipeline)} files, {len(data)} bytes")
    before = len(hub.file_requests())
    weights.pull(settings, FIVE_B, endpoint=hub.url)
    assert [s.file for s in hub.file_requests()[before:] if s.method == "GET" and s.file != INDEX] == [SHARD]
    assert shard.read_bytes() == tiny_repo.pipeline[SHARD]
    assert weights.status(settings, FIVE_B).state == "present"


def test_a_base_given_a_local_directory_carries_its_dependants(tmp_path, hub):
    ours = tmp_path / "ours"
    tiny_models.save("wan2.2-a14b", ours)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "presets.toml").write_text(f'[[preset]]\nname = "wan2.2-i2v-a14b"\npath = "{ours}"\n')
    out = cli(tmp_path, hub, "models", "pull", "wan2.2-i2v-a14b-turbo")
    # the pipeline is the local directory; only the LoRAs are fetched (their repo is not on the fake hub)
    assert "LoRA repo lightx2v/Wan2.2-Distill-Loras" in one_line_error(out)
    assert {s.file for s in hub.file_requests()} == set()
    settings = Settings(data_dir=tmp_path / "data")
    assert registry.local_weights(settings, BUILT_IN["wan2.2-i2v-a14b-turbo"]) == ours


def test_list_and_pull_refuse_a_malformed_preset_file_in_one_line(tmp_path, hub):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "presets.toml").write_text('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n'
                                                    'steps = "thirty"\n')
    for args in (("models", "list"), ("models", "pull", "x")):
        out = cli(tmp_path, hub, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert out.stderr.strip() == (f"error: {tmp_path / 'data' / 'presets.toml'}, line 4: preset 'x', field "
                                      "'steps': must be a whole number from 1 to 100000 (got 'thirty')")
