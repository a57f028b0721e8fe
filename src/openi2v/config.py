"""Settings: the only place that reads the environment (prefix ``OPENI2V_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from openi2v.outbound import AllowList
from openi2v.proxies import Proxies

KLING_MODEL = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENI2V_", extra="ignore")

    # Where state lives.
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: sqlite:///{data_dir}/openi2v.db
    # Absolute base for URLs we hand out; empty: taken from each request's Host.
    public_url: str = ""
    # Without public_url: the peers (proxies) whose X-Forwarded-Host and X-Forwarded-Proto are believed
    # when URLs are built from a request. Comma-separated IPs and CIDRs, "*" for any; uvicorn's default.
    forwarded_allow_ips: str = "127.0.0.1"
    # Where uploads and outputs live: "local" (under data_dir; every process on this machine), or "s3": an
    # S3-compatible bucket every machine shares (AWS, MinIO, R2, Ceph). Credentials come through boto3's
    # own chain (AWS_ACCESS_KEY_ID..., a profile, an instance role), never from here.
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = Field("", validate_default=True)
    s3_prefix: str = ""  # e.g. "openi2v/": keys are {prefix}media/..., {prefix}files/...
    s3_endpoint_url: str = ""  # empty: AWS; else e.g. http://minio:9000
    s3_region: str = ""
    # With s3: results hand out "presigned" GET URLs on the bucket (valid until the file's retention ends,
    # at most the 7 days S3 signatures allow), or "api" URLs that the API redirects to a fresh signed one.
    file_urls: Literal["presigned", "api"] = "presigned"

    # Workers.
    workers: int = 1  # worker processes started by `serve` beside the API; 0 = API only
    api_processes: int = 0  # processes answering HTTP (uvicorn workers); 0: one per core, at most 4
    lease_s: float = 30.0  # a claimed job is reclaimed this long after its last heartbeat
    heartbeat_s: float = 2.0
    poll_s: float = 0.2  # idle worker sleep between claim attempts
    max_attempts: int = 3  # a job whose worker died this many times fails
    # A worker told to stop (SIGTERM) claims nothing more and gives the job in hand this long to finish;
    # then it is handed back to the queue for another worker. 0: handed back at once.
    drain_s: float = Field(0.0, ge=0, allow_inf_nan=False)

    # Logs: "text" for a terminal; "json": one JSON object per line, with the prediction id on each line
    # about a prediction.
    log_format: Literal["text", "json"] = "text"

    # Scenarios (domain/scenarios.py): with sandbox on, the reserved test seeds force their outcomes. Keys
    # given a scenario follow it whatever this says.
    sandbox: bool = False

    # Requests.
    header_timeout_s: float = Field(10.0, gt=0)  # a connection still sending its request headers after this is closed
    sync_timeout_s: float = 90.0  # enable_sync_mode blocks at most this long, then answers 5004
    upload_ticket_ttl_s: int = 3600
    max_upload_mb: int = 50
    # A JSON body over this is a 413 before it is parsed. The default holds the largest submit the
    # rules allow inline: two 10 MB images as base64 data URIs (13.4 MB each).
    max_json_mb: int = 32
    fetch_timeout_s: float = 20.0
    # Limits per API key, held across every API process and worker; 0 turns one off. The defaults
    # are generous (above WaveSpeed's Silver tier): they stop a runaway client, not a busy one.
    submits_per_minute: int = Field(600, ge=0)  # over it: 429 with Retry-After (a minute's worth may come at once)
    max_running_per_key: int = Field(64, ge=0)  # more wait in the queue, and never fail for it
    max_queued_per_key: int = Field(1000, ge=0)  # over it: 429
    # Retention: outputs and uploads are deleted this many days after they were made (an upload's time
    # restarts when a submit uses it), as hosted; 0 keeps them for ever. Checked every sweep_interval_s.
    retention_days: float = Field(7.0, ge=0, allow_inf_nan=False)
    sweep_interval_s: float = Field(60.0, gt=0)
    fetch_allow_private: bool = False  # allow image and webhook URLs on any address (FETCH_ALLOW: some)
    # Comma-separated host names, IPs and CIDRs (e.g. "minio,10.1.2.3,192.168.0.0/16") whose image and
    # webhook URLs are allowed although not public; a malformed entry stops the settings (outbound.py).
    fetch_allow: str = ""
    webhook_timeout_s: float = 10.0  # one delivery attempt; failures are retried for about an hour
    # Seconds to wait after each failed webhook attempt, comma-separated; a failure after the last
    # gives up (empty: never retried).
    webhook_retry_delays: Annotated[tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...], NoDecode] = (
        5, 15, 60, 300, 900, 1800)
    webhook_standard_signature: bool = False  # also sign "v1,<base64>" (standardwebhooks / svix)

    # Engines: model id -> "motion" (the CPU camera engine), "instant" (the same at 144p: for tests), a
    # diffusion preset name (see `openi2v models list`), or "auto": `auto_preset` when a GPU and its weights
    # are present, otherwise "motion". Every preset in use is also served under its own model id.
    engines: dict[str, str] = Field(default_factory=lambda: {KLING_MODEL: "auto"})
    auto_preset: str = "wan2.2-ti2v-5b-turbo"
    # Price per 5 seconds of video, USD, per model id; ids not listed cost what the Kling id costs.
    prices: dict[str, float] = Field(default_factory=lambda: {KLING_MODEL: 0.35})

    # Diffusion presets.
    presets_file: Optional[Path] = None  # presets added or overridden in TOML; default: {data_dir}/presets.toml
    weights_dir: Optional[Path] = None  # default: {data_dir}/weights; a preset's files in weights_dir/<preset>
    device: str = "cuda"  # where diffusion pipelines run ("cpu" works, slowly)
    diffusion_steps: int = 0  # overrides every preset's steps (0: the preset's own)
    diffusion_size: str = ""  # "WxH": overrides every preset's native size (a small machine's setting)
    speedups: str = ""  # comma-separated, replaces the presets' own (see engines/accel.py)

    # Video output.
    short_side: int = 720  # 480, 720 or 1080
    fps: int = 24
    crf: int = 18
    preset: str = "veryfast"

    # NSFW: "flag" marks has_nsfw_contents; "block" fails the prediction with code 1200.
    nsfw_policy: Literal["flag", "block"] = "flag"
    nsfw_threshold: float = 0.5

    @field_validator("short_side")
    @classmethod
    def _short_side_is_a_standard_size(cls, value: int) -> int:
        if value not in (480, 720, 1080):
            raise ValueError("must be 480, 720 or 1080")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _s3_has_a_bucket(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("storage") == "s3" and not value:
            raise ValueError("must be set for s3 storage (OPENI2V_STORAGE=s3)")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        Proxies.parse(value)  # a ValueError naming the malformed entry
        return value

    @field_validator("fetch_allow")
    @classmethod
    def _allow_list_parses(cls, value: str) -> str:
        AllowList.parse(value)  # a ValueError naming the malformed entry
        return value

    @field_validator("webhook_retry_delays", mode="before")
    @classmethod
    def _delays_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",")) if value.strip() else ()
        return value

    @property
    def http_processes(self) -> int:
        return self.api_processes or max(1, min(4, os.cpu_count() or 1))

    @property
    def retention_s(self) -> float:
        return self.retention_days * 86400

    @property
    def presets_path(self) -> Path | None:
        """The preset file in use: the one named, or {data_dir}/presets.toml when it exists."""
        if self.presets_file:
            return self.presets_file
        default = self.data_dir / "presets.toml"
        return default if default.exists() else None

    @property
    def weights_root(self) -> Path:
        return self.weights_dir or self.data_dir / "weights"

    def price_for(self, model_id: str) -> float:
        return self.prices.get(model_id, self.prices.get(KLING_MODEL, 0.35))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openi2v.db'}"
