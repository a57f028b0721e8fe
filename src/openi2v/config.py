"""Settings: the only place that reads the environment (prefix ``OPENI2V_``)."""

from __future__ import annotations

from pathlib import Path

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
    api_processes: int = 1  # processes answering HTTP (uvicorn workers); each takes up to one core
    lease_s: float = 30.0  # a claimed job is reclaimed this long after its last heartbeat
    heartbeat_s: float = 2.0
    poll_s: float = 0.2  # idle worker sleep between claim attempts
    max_attempts: int = 3  # a job whose worker died this many times fails

    # Requests.
    sync_timeout_s: float = 90.0  # enable_sync_mode blocks at most this long, then answers 5004
    upload_ticket_ttl_s: int = 3600
    max_upload_mb: int = 50
    fetch_timeout_s: float = 20.0
    fetch_allow_private: bool = False  # allow image URLs on loopback/private networks

    # Engines: model id -> engine name.
    engines: dict[str, str] = Field(default_factory=lambda: {KLING_MODEL: "motion"})
    # Price per 5 seconds of video, USD, per model id.
    prices: dict[str, float] = Field(default_factory=lambda: {KLING_MODEL: 0.35})

    # Video output.
    short_side: int = 720  # 480, 720 or 1080
    fps: int = 24
    crf: int = 18
    preset: str = "veryfast"

    # NSFW: "flag" marks has_nsfw_contents; "block" fails the prediction with code 1200.
    nsfw_policy: str = "flag"
    nsfw_threshold: float = 0.5

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openi2v.db'}"
