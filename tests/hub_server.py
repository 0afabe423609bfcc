"""A local Hugging Face Hub on 127.0.0.1 for tests: the parts of the protocol huggingface_hub uses.

- ``GET /api/models/<repo>[/revision/<rev>]``: model info with ``siblings`` (sizes, ``blobId``, LFS
  sha256) when ``blobs=true``;
- ``HEAD``/``GET /<repo>/resolve/<rev>/<file>``: ``X-Repo-Commit``, ``ETag`` (git blob id),
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` answered with 206.

It serves folders from disk, counts the bytes of every body it sends, and injects faults per file
(404, 500, a truncated body, a body whose size differs from the listing, a cut after N bytes,
a slow link). As a hostile Hub it also lies in its listing: ``overrides`` replace a file's listed
name, size, blob id or sha256, or a repo's commit, with whatever a test asks for.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Served:
    path: str  # "<repo>/<file>"
    start: int
    end: int  # exclusive
    method: str


@dataclass
class HubServer:
    repos: dict[str, Path]
    log: list[Served] = field(default_factory=list)
    # "<repo>/<file>" -> ("404",) | ("cut", n) ...
    faults: dict[str, tuple] = field(default_factory=dict)
    # "<repo>/<file>" -> listed fields to lie about ("rfilename", "size", "blobId", "sha256");
    # "<repo>" -> {"sha": ...}, the commit the listing names
    overrides: dict[str, dict] = field(default_factory=dict)
    api_calls: int = 0

    def __post_init__(self) -> None:
        self._meta: dict[str, dict[str, dict]] = {}
        self._fixed = set(self.repos)
        for repo, folder in self.repos.items():
            self._meta[repo] = self._scan(folder)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _scan(folder: Path) -> dict[str, dict]:
        files = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                lfs = p.suffix == ".safetensors"
                files[p.relative_to(folder).as_posix()] = {
                    "size": len(data),
                    "blob_id": _git_blob_id(data),
                    "sha256": hashlib.sha256(data).hexdigest() if lfs else None,
                }
        return files

    def add_repo(self, repo: str, folder: Path) -> None:
        """Serve ``folder`` as ``repo`` until the next :meth:`reset`."""
        with self.lock:
            self.repos[repo] = folder
            self._meta[repo] = self._scan(folder)

    def sha256(self, repo: str, name: str) -> str:
        return self._meta[repo][name]["sha256"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bytes_served(self, suffix: str = "") -> int:
        return sum(
            s.end - s.start for s in self.log if s.method == "GET" and s.path.endswith(suffix)
        )

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.faults.clear()
            self.overrides.clear()
            self.api_calls = 0
            for repo in set(self.repos) - self._fixed:
                del self.repos[repo], self._meta[repo]

    def repo_bytes(self, repo: str) -> int:
        return sum(m["size"] for m in self._meta[repo].values())

    def _handler(server):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(
                self,
                code: int,
                body: bytes = b"",
                headers: dict | None = None,
                length: int | None = None,
            ):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, code: int, message: str, headers: dict | None = None):
                body = json.dumps({"error": message}).encode()
                self._send(code, body, {"Content-Type": "application/json", **(headers or {})})

            def do_GET(self):
                self._route()

            def do_HEAD(self):
                self._route()

            def _route(self):
                path = self.path.split("?", 1)[0]
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    return self._info(m.group(1), "blobs=" in self.path)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    return self._resolve(m.group(1), m.group(2), m.group(3))
                self._error(404, "not found", {"X-Error-Code": "RepoNotFound"})

            def _info(self, repo: str, blobs: bool):
                with server.lock:
                    server.api_calls += 1
                if repo not in server.repos:
                    return self._error(
                        404, "Repository not found", {"X-Error-Code": "RepoNotFound"}
                    )
                siblings = []
                for name, m in server._meta[repo].items():
                    lie = server.overrides.get(f"{repo}/{name}", {})
                    size, sha256 = lie.get("size", m["size"]), lie.get("sha256", m["sha256"])
                    s = {"rfilename": lie.get("rfilename", name)}
                    if blobs:
                        s.update(size=size, blobId=lie.get("blobId", m["blob_id"]))
                        if sha256:
                            s["lfs"] = {"size": size, "sha256": sha256, "pointerSize": 134}
                    siblings.append(s)
                body = json.dumps(
                    {
                        "id": repo,
                        "modelId": repo,
                        "sha": server.overrides.get(repo, {}).get("sha", COMMIT),
                        "siblings": siblings,
                        "private": False,
                        "tags": [],
                    }
                ).encode()
                self._send(200, body, {"Content-Type": "application/json"})

            def _resolve(self, repo: str, revision: str, name: str):
                key = f"{repo}/{name}"
                fault = server.faults.get(key, ())
                common = {"X-Repo-Commit": COMMIT}
                if repo not in server.repos:
                    return self._error(
                        404, "Repository not found", {"X-Error-Code": "RepoNotFound"}
                    )
                if revision not in ("main", COMMIT):
                    return self._error(
                        404, "Revision not found", {"X-Error-Code": "RevisionNotFound", **common}
                    )
                meta = server._meta[repo].get(name)
                if meta is None or fault[:1] == ("404",):
                    return self._error(
                        404, "Entry not found", {"X-Error-Code": "EntryNotFound", **common}
                    )
                if fault[:1] == ("500",) and self.command == "GET":
                    return self._error(500, "Internal Error")
                data = (server.repos[repo] / name).read_bytes()
                headers = {**common, "ETag": f'"{meta["blob_id"]}"', "Accept-Ranges": "bytes"}
                if meta["sha256"]:
                    headers.update(
                        {"X-Linked-Etag": f'"{meta["sha256"]}"', "X-Linked-Size": meta["size"]}
                    )
                if self.command == "HEAD":
                    return self._send(200, b"", headers, length=len(data))
                start, end, code = 0, len(data), 200
                rng = self.headers.get("Range")
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    start = int(m.group(1))
                    end = min(int(m.group(2)) + 1, len(data)) if m.group(2) else len(data)
                    code = 206
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                body = data[start:end]
                length = len(body)
                if fault[:1] == ("wrong_size",):  # the file on the server is not the one listed
                    body = body + b"\0" * fault[1]
                    length = len(body)
                if fault[:1] == ("corrupt",):  # same size, one byte flipped
                    body = body[:-1] + bytes([body[-1] ^ 0xFF]) if body else body
                if fault[:1] == ("truncate",):  # announce the full length, send less, close
                    body = body[: max(0, len(body) - fault[1])]
                if fault[:1] == ("cut",):  # the connection drops after N bytes of this file (once)
                    body = body[: fault[1]]
                    with server.lock:
                        server.faults.pop(key, None)
                with server.lock:
                    server.log.append(Served(key, start, start + len(body), "GET"))
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(length))
                self.end_headers()
                step, delay = (
                    (fault[1], fault[2]) if fault[:1] == ("slow",) else (len(body) or 1, 0.0)
                )
                try:
                    for i in range(0, len(body), step):  # a slow link: a chunk, then a pause
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(delay)
                except OSError:
                    pass
                if len(body) < length:
                    self.close_connection = True

        return Handler
