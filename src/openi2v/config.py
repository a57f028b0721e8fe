"""Settings: the only place that reads the environment (prefix ``OPENI2V_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KLING_MODEL = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENI2V_", extra="ignore")

    # Where state lives.
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: sqlite:///{data_dir}/openi2v.db
    # Absolute base for URLs we hand out; empty: taken from each request's Host.
    public_url: str = ""

    # Workers.
    workers: int = 1  # worker processes started by `serve` beside the API; 0 = API only
    api_processes: int = 0  # processes answering HTTP (uvicorn workers); 0: one per core, at most 4
    lease_s: float = 30.0  # a claimed job is reclaimed this long after its last heartbeat
    heartbeat_s: float = 2.0
    poll_s: float = 0.2  # idle worker sleep between claim attempts
    max_attempts: int = 3  # a job whose worker died this many times fails

    # Requests.
    sync_timeout_s: float = 90.0  # enable_sync_mode blocks at most this long, then answers 5004
    upload_ticket_ttl_s: int = 3600
    max_upload_mb: int = 50
    fetch_timeout_s: float = 20.0
    fetch_allow_private: bool = False  # allow image and webhook URLs on loopback/private networks
    webhook_timeout_s: float = 10.0  # one delivery attempt; failures are retried for about an hour
    webhook_standard_signature: bool = False  # also sign "v1,<base64>" (standardwebhooks / svix)

    # Engines: model id -> "motion" (the CPU camera engine), a diffusion preset name (see
    # `openi2v models list`), or "auto": `auto_preset` when a GPU and its weights are present,
    # otherwise "motion". Every preset in use is also served under its own model id.
    engines: dict[str, str] = Field(default_factory=lambda: {KLING_MODEL: "auto"})
    auto_preset: str = "wan2.2-ti2v-5b-turbo"
    # Price per 5 seconds of video, USD, per model id; ids not listed cost what the Kling id costs.
    prices: dict[str, float] = Field(default_factory=lambda: {KLING_MODEL: 0.35})

    # Diffusion presets.
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
    nsfw_policy: str = "flag"
    nsfw_threshold: float = 0.5

    @property
    def http_processes(self) -> int:
        return self.api_processes or max(1, min(4, os.cpu_count() or 1))

    @property
    def weights_root(self) -> Path:
        return self.weights_dir or self.data_dir / "weights"

    def price_for(self, model_id: str) -> float:
        return self.prices.get(model_id, self.prices.get(KLING_MODEL, 0.35))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openi2v.db'}"
