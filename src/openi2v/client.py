"""A small client of the public HTTP API, used by `openi2v submit`."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path

import httpx

from openi2v.domain.prediction import Status


class Client:
    def __init__(self, base_url: str, key: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {key}"})

    def _data(self, resp: httpx.Response) -> dict:
        body = resp.json()
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {body.get('message', resp.text)}")
        return body["data"]

    def upload(self, path: Path) -> str:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        ticket = self._data(self.http.post("/api/v3/media/uploads", json={
            "filename": path.name, "size": path.stat().st_size, "content_type": content_type}))
        put = httpx.put(ticket["upload"]["url"], content=path.read_bytes(), headers=ticket["upload"]["headers"])
        put.raise_for_status()
        return ticket["download_url"]

    def submit(self, model: str, body: dict) -> dict:
        return self._data(self.http.post(f"/api/v3/{model}", json=body))

    def result(self, prediction_id: str) -> dict:
        return self._data(self.http.get(f"/api/v3/predictions/{prediction_id}/result"))

    def wait(self, prediction_id: str, interval: float = 0.5) -> dict:
        from rich.progress import Progress

        with Progress() as bar:
            task = bar.add_task("queued", total=100)
            while True:
                data = self.result(prediction_id)
                status = Status(data["status"])
                label = status.value if status is not Status.CREATED else f"queued (#{data.get('queue_position', 0) + 1})"
                bar.update(task, completed=data.get("progress", 0), description=label)
                if status.terminal:
                    return data
                time.sleep(interval)
