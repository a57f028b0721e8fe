"""Peak memory of an API process under oversized and costly requests.

Starts a real server (one API process, no workers) and runs each attack from
tests/e2e/attacks.py, printing how far the process's resident memory rose above where it
stood before the attack (sampled every 5 ms), and the answer each got.

Run: .venv/bin/python bench/api_memory.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e import attacks  # noqa: E402
from tests.e2e.server import Server  # noqa: E402

ATTACKS = [
    ("chunked PUT of 1 GB", attacks.chunked_put, {}),
    ("JSON submit of 300 MB (Content-Length)", attacks.big_json, {}),
    ("JSON submit of 300 MB (chunked)", attacks.big_json, {"chunked": True}),
    ("JSON submit of 30 MB of tiny values", attacks.many_values, {}),
    ("ten 40-MP PNG submits at once", attacks.many_pixels_submits, {}),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), workers=0, OPENI2V_API_PROCESSES="1").start()
        try:
            key = server.new_key(10.0)
            start = attacks.rss(Path(f"/proc/{server.proc.pid}/status")) / attacks.MB
            print(f"API process at rest: {start:.0f} MB")
            for name, attack, kwargs in ATTACKS:
                with attacks.PeakRss(server.proc.pid) as peak:
                    answer = attack(server.url, key, **kwargs)
                print(f"{name:42s} peak {peak.peak / attacks.MB:6.0f} MB (+{peak.growth_mb:5.0f})  answer {answer}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
