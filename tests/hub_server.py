"""A fake Hugging Face Hub: the part of the protocol huggingface_hub 2.4 speaks to list a repo
(``HfApi.model_info(files_metadata=True)``) and to download its files (``hf_hub_download``),
served over HTTP on a free loopback port from directories a test builds.

What it answers, as huggingface_hub reads it (hf_api.py ``model_info`` and ``ModelInfo``;
file_download.py ``get_hf_file_metadata``, ``_get_metadata_or_catch_error``, ``http_get``;
utils/_http.py ``hf_raise_for_status``, ``_httpx2_follow_hub_redirects_with_backoff``):

    GET /api/models/{repo}[/revision/{rev}]   {"id", "sha", "gated", "siblings": [{"rfilename", "size",
                                              "blobId", "lfs": {"size", "sha256", "pointerSize"}}]}
    HEAD|GET /{repo}/resolve/{rev}/{path}     a git file: 200, X-Repo-Commit, ETag (its blob sha1),
                                              Content-Length, the bytes. An LFS file: 302 to the "CDN",
                                              with X-Repo-Commit, X-Linked-Etag (sha256), X-Linked-Size
    HEAD|GET /cdn/{repo}/{commit}/{path}      the bytes; ``Range: bytes=N-`` answered 206, Content-Range

The CDN is this same server named ``localhost`` while the Hub is ``127.0.0.1``: another origin to
huggingface_hub, so, as with the real CDN, its HEAD stops at the 302 and its GET goes there
without the Authorization header. Errors carry the X-Error-Code huggingface_hub maps to its
exceptions (RepoNotFound, EntryNotFound, RevisionNotFound, GatedRepo); a token the hub does not
know gets 401 "Invalid credentials in Authorization header". Never an X-Xet-* header: downloads
take the plain HTTP path. ``log`` records every request, and the body bytes each was sent.

A test breaks a download on purpose: ``cut`` drops the connection once, mid-body (a client resumes
within its run); ``quota`` sends so many of a file's bytes in all, then drops the connection and
answers 500 for its bytes until the test lifts it (an outage longer than a client's retries).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".model", ".png"}


@dataclass
class Repo:
    id: str
    files: dict[str, bytes]
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens whose account accepted the licence

    @property
    def commit(self) -> str:
        h = hashlib.sha1()
        for path, data in sorted(self.files.items()):
            h.update(path.encode() + b"\0" + hashlib.sha1(data).digest())
        return h.hexdigest()

    @staticmethod
    def lfs(path: str) -> bool:
        return Path(path).suffix in LFS_SUFFIXES

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        if not self.lfs(path):
            return {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(pointer),
                "lfs": {"size": len(data), "sha256": sha256, "pointerSize": len(pointer)}}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Served:
    method: str
    path: str  # the URL path
    file: str | None  # the repo file it was for (resolve or CDN), if any
    range: str | None
    status: int
    sent: int  # body bytes written
    authorization: str | None


class FakeHub:
    """Start with ``with FakeHub() as hub``; ``hub.url`` is the endpoint (HF_ENDPOINT)."""

    def __init__(self, tokens: tuple[str, ...] = ()) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens = set(tokens)
        self.cut: dict[str, int] = {}  # repo file -> its next body is cut off after this many bytes (once)
        self.quota: dict[str, int] = {}  # repo file -> body bytes of it left to send; then cut off, then 500s
        self.corrupt: dict[str, float] = {}  # repo file -> serve it corrupted this many more times (inf: always)
        self.log: list[Served] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}/cdn"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo_id: str, directory: Path | None = None, files: dict[str, bytes] | None = None,
            gated: bool = False, granted: tuple[str, ...] = ()) -> Repo:
        """Serve a repo holding every file under ``directory`` and ``files`` (path -> bytes)."""
        content = {p.relative_to(directory).as_posix(): p.read_bytes()
                   for p in sorted(directory.rglob("*")) if p.is_file()} if directory else {}
        content.update(files or {})
        self.repos[repo_id] = Repo(repo_id, content, gated, set(granted))
        return self.repos[repo_id]

    def downloads(self) -> list[Served]:
        """The GETs that sent a file's bytes."""
        with self.lock:
            return [s for s in self.log if s.method == "GET" and s.file and s.status in (200, 206)]

    def file_requests(self) -> list[Served]:
        """Every request for a file (HEAD or GET, resolve or CDN)."""
        with self.lock:
            return [s for s in self.log if s.file]

    def _limit(self, file: str, size: int) -> int | None:
        """How many bytes of a ``size``-byte body of ``file`` to send before cutting it off (None: all);
        spends ``cut`` and ``quota``."""
        with self.lock:
            limits = [n for n in (self.cut.pop(file, None), self.quota.get(file)) if n is not None]
            if file in self.quota:
                self.quota[file] -= min(size, *limits)
            return min(limits) if limits else None

    def _exhausted(self, file: str) -> bool:
        with self.lock:
            return self.quota.get(file) == 0

    def _corrupt_now(self, file: str) -> bool:
        with self.lock:
            left = self.corrupt.get(file, 0)
            if left:
                self.corrupt[file] = left - 1
            return bool(left)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        def _route(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/api/models/"):
                self._model_info(path.removeprefix("/api/models/"))
            elif path.startswith("/cdn/"):
                ns, name, commit, file = path.removeprefix("/cdn/").split("/", 3)
                repo = hub.repos.get(f"{ns}/{name}")
                if repo is None or commit != repo.commit or file not in repo.files:
                    return self._answer(404, {"X-Error-Code": "EntryNotFound"}, file=file)
                self._bytes(repo, file, {"ETag": f'"{hashlib.sha256(repo.files[file]).hexdigest()}"'}, body)
            elif "/resolve/" in path:
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                revision, _, file = rest.partition("/")
                self._resolve(repo_id, revision, file, body)
            else:
                self._answer(404, {})

        def _model_info(self, rest: str) -> None:
            parts = rest.split("/")
            repo = hub.repos.get("/".join(parts[:2]))
            if not self._token_ok():
                return
            if repo is None:
                return self._answer(404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"})
            if len(parts) > 3 and parts[2] == "revision" and parts[3] not in ("main", repo.commit):
                return self._answer(404, {"X-Error-Code": "RevisionNotFound"}, {"error": "Invalid rev id"})
            info = {"id": repo.id, "modelId": repo.id, "sha": repo.commit, "private": False,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [repo.sibling(p) for p in sorted(repo.files)]}
            self._answer(200, {}, info)

        def _resolve(self, repo_id: str, revision: str, file: str, body: bool) -> None:
            repo = hub.repos.get(repo_id)
            if not self._token_ok(file):
                return
            if repo is None:
                return self._answer(404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}, file)
            commit = {"X-Repo-Commit": repo.commit}
            if revision not in ("main", repo.commit):
                return self._answer(404, {"X-Error-Code": "RevisionNotFound"}, {"error": "Invalid rev id"}, file)
            if repo.gated and self._bearer() not in repo.granted:
                status = 403 if self._bearer() else 401
                message = f"Access to model {repo.id} is restricted. You must have access to it and be authenticated."
                return self._answer(status, {"X-Error-Code": "GatedRepo", "X-Error-Message": message},
                                    {"error": message}, file)
            if file not in repo.files:
                return self._answer(404, {**commit, "X-Error-Code": "EntryNotFound"}, {"error": "Entry not found"},
                                    file)
            sibling = repo.sibling(file)
            if repo.lfs(file):
                return self._answer(302, {**commit, "Location": f"{hub.cdn}/{repo.id}/{repo.commit}/{file}",
                                          "ETag": f'"{sibling["blobId"]}"',
                                          "X-Linked-Etag": f'"{sibling["lfs"]["sha256"]}"',
                                          "X-Linked-Size": str(sibling["size"])}, file=file)
            self._bytes(repo, file, {**commit, "ETag": f'"{sibling["blobId"]}"'}, body)

        def _bytes(self, repo: Repo, file: str, headers: dict, body: bool) -> None:
            """A file's bytes (corrupted, or cut off, when the test asked), from a ``Range: bytes=N-`` on."""
            data = repo.files[file]
            if body and hub._exhausted(file):
                return self._answer(500, {}, {"error": "Internal Error"}, file)
            if body and hub._corrupt_now(file):
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
            part = data[start:]
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            cut = hub._limit(file, len(part)) if body else None
            sent = (min(len(part), cut) if cut is not None else len(part)) if body else 0
            self._record(status, file, sent)  # before the bytes: a client that has them finds them in the log
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(part)), "Accept-Ranges": "bytes"}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(part[:sent])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True  # mid-body: the client sees the connection drop

        def _bearer(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            return auth.removeprefix("Bearer ").strip() or None

        def _token_ok(self, file: str | None = None) -> bool:
            token = self._bearer()
            if token is None or token in hub.tokens:
                return True
            self._answer(401, {"X-Error-Message": "Invalid credentials in Authorization header"},
                         {"error": "Invalid credentials in Authorization header"}, file)
            return False

        def _answer(self, status: int, headers: dict, payload: dict | None = None, file: str | None = None) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self._record(status, file, 0)  # before the answer: a client that has it finds it in the log
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _record(self, status: int, file: str | None, sent: int) -> None:
            with hub.lock:
                hub.log.append(Served(self.command, urlsplit(self.path).path, file, self.headers["Range"], status,
                                      sent, self.headers.get("Authorization")))

    return Handler
