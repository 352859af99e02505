"""A small in-memory server that speaks the Hugging Face Hub HTTP protocol, for tests.

The real ``huggingface_hub`` client talks to it over 127.0.0.1, so the tests exercise the
client's actual requests (DESIGN.md section 6) without reaching the internet. It keeps repos
with branches, tags, pull-request refs and commits, a content-addressed LFS store, private and
gated repos, and tokens with read or write roles. A failure knob makes chosen requests fail
(an HTTP status, or a dropped connection) so that retries can be tested.

With ``HF_HUB_DISABLE_XET=1`` (read by ``huggingface_hub`` at import time) the client uploads
through the plain LFS protocol this server implements; with ``hf_xet`` enabled it would ask for
a Xet token instead and has no LFS fallback.

Usage in a test module (or, once the lead adds it, through ``tests/conftest.py``)::

    from tests.hub_server import hub_server as hub_server  # the pytest fixture

    def test_x(hub_server):
        hub_server.create_repo("panacea-org/tiny")
        sha = hub_server.seed_files("panacea-org/tiny", {"config.json": b"{}"})
        ...  # HF_ENDPOINT and HF_HOME already point at the server and a temporary home
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import itertools
import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

# huggingface_hub reads this once, at import: set it before anything imports the client.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

DEFAULT_USER = "panacea-tester"
DEFAULT_ORG = "panacea-org"
WRITE_TOKEN = "hf_panaceaTestWriteToken0000000000000"
READ_TOKEN = "hf_panaceaTestReadToken00000000000000"
OUTSIDER_TOKEN = "hf_panaceaTestOutsiderToken0000000000"

# Mirrors the .gitattributes the Hub puts in every new model repo (a representative subset).
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.msgpack",
        "*.model", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl",
        "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite", "*.tgz", "*.xz", "*.zip",
        "*.zst", "*tfevents*",
    )
)  # fmt: skip
LFS_PATTERNS = tuple(line.split()[0] for line in GITATTRIBUTES.splitlines())
# The Hub stores anything above 10 MiB, or anything binary, through LFS.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
ZERO_SHA = "0" * 40


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as ETag and tree oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in the git tree for an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    """Whether the Hub would store this file through LFS (pattern, size or binary content)."""
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in LFS_PATTERNS):
        return True
    if size > LFS_SIZE_THRESHOLD or b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        # A sample may cut a multi-byte character at its end; only a failure earlier means binary.
        try:
            sample[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """A file in a commit: inline content for regular files, an LFS object id otherwise."""

    size: int
    content: bytes | None = None
    lfs_oid: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    @property
    def blob_id(self) -> str:
        if self.lfs_oid is not None:
            return git_blob_sha1(lfs_pointer(self.lfs_oid, self.size))
        return git_blob_sha1(self.content or b"")


@dataclasses.dataclass
class Commit:
    """One commit: a full snapshot of the tree, as the Hub's API exposes it."""

    oid: str
    parent: str | None
    title: str
    description: str
    files: dict[str, FileEntry]
    date: str


@dataclasses.dataclass
class Repo:
    """A model repository: refs, commits, visibility, gating and the LFS objects it owns."""

    repo_id: str
    private: bool = False
    gated: bool | str = False
    gated_allowed: set[str] = dataclasses.field(default_factory=set)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    pull_requests: dict[int, str] = dataclasses.field(default_factory=dict)
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    lfs_oids: set[str] = dataclasses.field(default_factory=set)
    created: str = dataclasses.field(default_factory=_now)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def resolve(self, revision: str) -> str | None:
        """A branch, tag, ``refs/pr/N`` or full commit sha → commit sha, or None."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if match and int(match.group(1)) in self.pull_requests:
            return self.pull_requests[int(match.group(1))]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and revision in self.commits:
            return revision
        return None


@dataclasses.dataclass(frozen=True)
class Token:
    """What a bearer token grants: a user, its organizations and a role."""

    user: str
    orgs: tuple[str, ...] = ()
    write: bool = True


@dataclasses.dataclass
class FailureRule:
    """Fail the matching requests after ``skip`` of them got through, ``times`` times (None: always)."""

    route: str
    status: int
    times: int | None
    skip: int
    message: str
    seen: int = 0
    fired: int = 0

    def take(self) -> bool:
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server answered. Never holds the token, only who it belonged to."""

    method: str
    route: str
    path: str
    user: str | None
    status: int


class HubError(Exception):
    """Raised inside handlers; turned into the Hub's error response shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = dict(body or {})


DROP_CONNECTION = 0
"""Pass as ``status`` to :meth:`HubServer.fail` to close the connection without answering."""


class HubServer:
    """An in-memory Hub on 127.0.0.1. Thread-safe; start with :meth:`start` or as a context manager.

    Attributes:
        url: the endpoint to put in ``HF_ENDPOINT``.
        token / read_token / outsider_token: a write token and a read-only token for
            ``panacea-tester`` (member of ``panacea-org``), and a write token for an unrelated user.
        requests: every request answered, in order (see :class:`RequestRecord`).
        internal_errors: tracebacks of handler crashes; a test should leave it empty.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._tokens: dict[str, Token] = {
            WRITE_TOKEN: Token(DEFAULT_USER, (DEFAULT_ORG,), write=True),
            READ_TOKEN: Token(DEFAULT_USER, (DEFAULT_ORG,), write=False),
            OUTSIDER_TOKEN: Token("outsider", (), write=True),
        }
        self._failures: list[FailureRule] = []
        self._counter = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []
        self.token = WRITE_TOKEN
        self.read_token = READ_TOKEN
        self.outsider_token = OUTSIDER_TOKEN
        self.user = DEFAULT_USER
        self.org = DEFAULT_ORG
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="hub-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close kept-alive client connections so no handler thread lingers."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test helpers

    def add_token(
        self, token: str, user: str, *, write: bool = True, orgs: tuple[str, ...] = ()
    ) -> None:
        """Register another bearer token (e.g. a distinctive one for leak checks)."""
        with self._lock:
            self._tokens[token] = Token(user, tuple(orgs), write=write)

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        gated: bool | str = False,
        gated_allowed: tuple[str, ...] = (),
    ) -> Repo:
        """Create a repo directly (no HTTP), with the Hub's initial ``.gitattributes`` commit."""
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id} already exists")
            repo = Repo(repo_id, private=private, gated=gated, gated_allowed=set(gated_allowed))
            self._repos[repo_id] = repo
            data = GITATTRIBUTES.encode()
            files = {".gitattributes": FileEntry(size=len(data), content=data)}
            commit = self._new_commit(repo, None, "initial commit", "", files)
            repo.branches["main"] = commit.oid
            return repo

    def seed_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str],
        *,
        branch: str = "main",
        message: str = "seed files",
    ) -> str:
        """Commit files directly to ``branch`` (created from main if new); returns the commit sha."""
        with self._lock:
            repo = self._repo(repo_id)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            head = repo.commits[repo.branches[branch]]
            tree = dict(head.files)
            for path, value in files.items():
                data = value.encode() if isinstance(value, str) else bytes(value)
                tree[path] = self._store_entry(repo, path, data)
            commit = self._new_commit(repo, head.oid, message, "", tree)
            repo.branches[branch] = commit.oid
            return commit.oid

    def create_branch(self, repo_id: str, branch: str, *, from_revision: str = "main") -> str:
        """Create ``branch`` at ``from_revision``; returns its commit sha."""
        with self._lock:
            repo = self._repo(repo_id)
            sha = repo.resolve(from_revision)
            if sha is None:
                raise ValueError(f"unknown revision {from_revision}")
            repo.branches[branch] = sha
            return sha

    def create_tag(self, repo_id: str, tag: str, *, revision: str = "main") -> str:
        """Tag ``revision``; returns the tagged commit sha."""
        with self._lock:
            repo = self._repo(repo_id)
            sha = repo.resolve(revision)
            if sha is None:
                raise ValueError(f"unknown revision {revision}")
            repo.tags[tag] = sha
            return sha

    def grant_access(self, repo_id: str, user: str) -> None:
        """Accept ``user``'s access request to a gated repo."""
        with self._lock:
            self._repo(repo_id).gated_allowed.add(user)

    def repo(self, repo_id: str) -> Repo:
        """The stored repo (read its ``private``, ``branches``, ``commits`` ... in assertions)."""
        with self._lock:
            return self._repo(repo_id)

    def has_repo(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._repos

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha ``revision`` points to."""
        with self._lock:
            sha = self._repo(repo_id).resolve(revision)
            if sha is None:
                raise KeyError(f"{repo_id} has no revision {revision}")
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file at ``revision`` with its bytes (LFS objects resolved)."""
        with self._lock:
            commit = self._repo(repo_id).commits[self.head(repo_id, revision)]
            return {path: self._entry_bytes(entry) for path, entry in commit.files.items()}

    def lfs_objects(self, repo_id: str) -> set[str]:
        """The sha256 of every LFS object uploaded to the repo (committed or not)."""
        with self._lock:
            return set(self._repo(repo_id).lfs_oids)

    def fail(
        self,
        route: str,
        *,
        status: int = 500,
        times: int | None = 1,
        skip: int = 0,
        message: str = "injected failure",
    ) -> FailureRule:
        """Make requests on ``route`` fail: after ``skip`` pass, the next ``times`` (None: all).

        Routes: ``create_repo``, ``repo_info``, ``tree``, ``refs``, ``preupload``, ``lfs_batch``,
        ``lfs_put``, ``lfs_verify``, ``commit``, ``branch``, ``resolve``, ``validate_yaml``,
        ``whoami`` or ``*`` (any). ``status=DROP_CONNECTION`` closes the socket instead.
        Note the client itself retries 408/429/5xx and dropped connections on LFS PUTs and
        on GETs with backoff (1 s, 2 s, ...): a non-retried status fails fast.
        """
        rule = FailureRule(route, status, times, skip, message)
        with self._lock:
            self._failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def count(self, route: str, *, method: str | None = None) -> int:
        """How many requests hit ``route`` (failed ones included)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.route == route and (method is None or r.method == method)
            )

    # ----------------------------------------------------------------- internals (lock held)

    def _repo(self, repo_id: str) -> Repo:
        try:
            return self._repos[repo_id]
        except KeyError:
            raise KeyError(f"no repo {repo_id}") from None

    def _new_commit(
        self,
        repo: Repo,
        parent: str | None,
        title: str,
        description: str,
        files: dict[str, FileEntry],
    ) -> Commit:
        # A counter keeps two commits of identical trees distinct, as timestamps do on the Hub.
        seed = json.dumps(
            [repo.repo_id, parent, title, next(self._counter), sorted(files)], default=str
        )
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(oid, parent, title, description, files, _now())
        repo.commits[oid] = commit
        return commit

    def _store_entry(self, repo: Repo, path: str, data: bytes) -> FileEntry:
        if data and wants_lfs(path, len(data), data[:512]):
            oid = hashlib.sha256(data).hexdigest()
            self._blobs[oid] = data
            repo.lfs_oids.add(oid)
            return FileEntry(size=len(data), lfs_oid=oid)
        return FileEntry(size=len(data), content=data)

    def _entry_bytes(self, entry: FileEntry) -> bytes:
        if entry.lfs_oid is not None:
            return self._blobs[entry.lfs_oid]
        return entry.content or b""

    def _take_failure(self, route: str) -> FailureRule | None:
        with self._lock:
            for rule in self._failures:
                if rule.route in (route, "*") and rule.take():
                    return rule
        return None


class _HubHandler(BaseHTTPRequestHandler):
    """Routes one request to the matching Hub endpoint. ``hub`` is bound per server."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "panacea-hub-test/1"
    # Idle kept-alive connections give up after this, so no handler thread outlives a test long.
    timeout = 30

    # ----------------------------------------------------------------- plumbing

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output stays clean (and nothing here could print a header)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section: read up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        self.token_info = self._auth()
        route, handler, args = self._route(method, split.path)
        status = 500
        try:
            rule = self.hub._take_failure(route)
            if rule is not None:
                if rule.status == DROP_CONNECTION:
                    status = 0
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                raise HubError(rule.status, rule.message)
            if handler is None:
                raise HubError(404, f"no route for {method} {split.path}")
            if self.token_info is False:
                # The Hub refuses a bad token before looking at the repo.
                raise HubError(401, "Invalid credentials in Authorization header")
            status = handler(*args)
        except HubError as err:
            status = err.status
            self._send_error(err)
        except Exception:  # a crash must surface in the test, not hang the client
            import traceback

            self.hub.internal_errors.append(traceback.format_exc())
            status = 500
            self._send_error(HubError(500, "internal error in the test hub server"))
        finally:
            user = self.token_info.user if isinstance(self.token_info, Token) else None
            with self.hub._lock:
                self.hub.requests.append(RequestRecord(method, route, split.path, user, status))

    def _route(self, method: str, path: str) -> tuple[str, Any, tuple[Any, ...]]:
        # Split before unquoting: a revision like refs%2Fpr%2F1 is one segment.
        parts = [p for p in path.split("/") if p]
        seg = [unquote(p) for p in parts]
        if seg[:2] == ["api", "repos"] and len(seg) == 3:
            table = {("POST", "create"): self._create_repo, ("DELETE", "delete"): self._delete_repo}
            return f"{seg[2]}_repo", table.get((method, seg[2])), ()
        if seg == ["api", "validate-yaml"] and method == "POST":
            return "validate_yaml", self._validate_yaml, ()
        if seg == ["api", "whoami-v2"] and method == "GET":
            return "whoami", self._whoami, ()
        if seg[:2] == ["api", "models"] and len(seg) >= 4:
            return self._route_api(method, seg[2] + "/" + seg[3], seg[4:])
        if seg[:1] == ["lfs-storage"] and len(seg) == 2 and method == "PUT":
            return "lfs_put", self._lfs_put, (seg[1],)
        if len(seg) == 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
            repo_id = seg[0] + "/" + seg[1][: -len(".git")]
            table = {
                "batch": ("lfs_batch", self._lfs_batch),
                "verify": ("lfs_verify", self._lfs_verify),
            }
            name, fn = table.get(seg[5], ("lfs", None))
            return name, fn if method == "POST" else None, (repo_id,)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self._resolve, (seg[0] + "/" + seg[1], seg[3], "/".join(seg[4:]))
        if len(seg) == 4 and seg[2] in ("commit", "discussions") and method == "GET":
            return "web", self._web_page, (seg[0] + "/" + seg[1],)
        return "unknown", None, ()

    def _route_api(self, method: str, repo_id: str, rest: list[str]) -> tuple[str, Any, tuple]:
        if not rest and method == "GET":
            return "repo_info", self._repo_info, (repo_id, None)
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return "repo_info", self._repo_info, (repo_id, rest[1])
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            return "tree", self._tree, (repo_id, rest[1], "/".join(rest[2:]))
        if rest == ["refs"] and method == "GET":
            return "refs", self._refs, (repo_id,)
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            return "preupload", self._preupload, (repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return "commit", self._commit, (repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
            return "branch", self._branch, (repo_id, rest[1], method)
        if rest == ["settings"] and method == "PUT":
            return "settings", self._settings, (repo_id,)
        return "unknown", None, ()

    def _auth(self) -> Token | bool | None:
        """The caller's token, None when anonymous, False when the token is unknown."""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return self.hub._tokens.get(header[7:].strip(), False)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        return status

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> int:
        return self._send(status, json.dumps(payload).encode(), headers=headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message, **err.body}, headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError:
            raise HubError(400, "request body is not valid JSON") from None

    # ----------------------------------------------------------------- access control

    def _user(self) -> Token | None:
        return self.token_info if isinstance(self.token_info, Token) else None

    def _is_member(self, repo: Repo) -> bool:
        tok = self._user()
        return tok is not None and repo.namespace in (tok.user, *tok.orgs)

    def _get_repo(self, repo_id: str) -> Repo:
        """The repo if the caller may see it; else the Hub's 401/404 (it never confirms existence)."""
        with self.hub._lock:
            repo = self.hub._repos.get(repo_id)
        if repo is None or (repo.private and not self._is_member(repo)):
            status = 401 if self._user() is None else 404
            raise HubError(status, "Repository not found", code="RepoNotFound")
        return repo

    def _check_download(self, repo: Repo) -> None:
        if not repo.gated or self._is_member(repo):
            return
        tok = self._user()
        if tok is None:
            raise HubError(
                401,
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be"
                " authenticated to access it. Please log in.",
                code="GatedRepo",
            )
        if tok.user not in repo.gated_allowed:
            raise HubError(
                403,
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized"
                f" list. Visit {self.hub.url}/{repo.repo_id} to ask for access.",
                code="GatedRepo",
            )

    def _check_write(self, repo: Repo) -> None:
        tok = self._user()
        if tok is None:
            raise HubError(401, "You must be authenticated to write to this repository")
        if not tok.write:
            raise HubError(403, f"This token is read-only: it cannot write to {repo.repo_id}")
        if not self._is_member(repo):
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")

    def _revision(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return sha

    # ----------------------------------------------------------------- endpoints

    def _whoami(self) -> int:
        tok = self._user()
        if tok is None:
            raise HubError(401, "Invalid username or password.")
        role = "write" if tok.write else "read"
        return self._json(
            200,
            {
                "type": "user",
                "name": tok.user,
                "orgs": [{"name": o, "type": "org"} for o in tok.orgs],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test", "role": role},
                },
            },
        )

    def _validate_yaml(self) -> int:
        content = self._json_body().get("content", "")
        match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(\r?\n|$)", content)
        if match:
            try:
                data = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                return self._json(400, {"errors": [{"message": f"Invalid YAML: {err}"}]})
            if data is not None and not isinstance(data, dict):
                return self._json(400, {"errors": [{"message": "metadata must be a mapping"}]})
        return self._json(200, {"errors": [], "warnings": []})

    def _create_repo(self) -> int:
        payload = self._json_body()
        tok = self._user()
        if tok is None:
            raise HubError(401, "Invalid username or password.")
        namespace = payload.get("organization") or tok.user
        repo_id = f"{namespace}/{payload.get('name')}"
        if (payload.get("type") or "model") != "model":
            raise HubError(400, "the test hub only hosts model repos")
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub._repos:
                raise HubError(409, "You already created this model repo", body={"url": url})
            if namespace not in (tok.user, *tok.orgs) or not tok.write:
                raise HubError(
                    403,
                    f"You don't have the rights to create a model under the namespace {namespace}",
                )
            self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> int:
        payload = self._json_body()
        tok = self._user()
        repo_id = (
            f"{payload.get('organization') or (tok.user if tok else '')}/{payload.get('name')}"
        )
        repo = self._get_repo(repo_id)
        self._check_write(repo)
        with self.hub._lock:
            del self.hub._repos[repo_id]
        return self._json(200, {})

    def _settings(self, repo_id: str) -> int:
        repo = self._get_repo(repo_id)
        self._check_write(repo)
        payload = self._json_body()
        with self.hub._lock:
            if "private" in payload:
                repo.private = bool(payload["private"])
            if "gated" in payload:
                repo.gated = payload["gated"]
        return self._json(200, {})

    def _repo_info(self, repo_id: str, revision: str | None) -> int:
        repo = self._get_repo(repo_id)
        with self.hub._lock:
            sha = self._revision(repo, revision or "main")
            commit = repo.commits[sha]
            siblings = [{"rfilename": p} for p in sorted(commit.files)]
        return self._json(
            200,
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo.namespace,
                "sha": sha,
                "lastModified": commit.date,
                "createdAt": repo.created,
                "private": repo.private,
                "gated": repo.gated,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _tree(self, repo_id: str, revision: str, prefix: str) -> int:
        repo = self._get_repo(repo_id)
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        with self.hub._lock:
            commit = repo.commits[self._revision(repo, revision)]
            entries = _tree_entries(commit.files, prefix.strip("/"), recursive)
        if prefix and not entries:
            raise HubError(404, f"{prefix} does not exist on {revision}", code="EntryNotFound")
        return self._json(200, entries)

    def _refs(self, repo_id: str) -> int:
        repo = self._get_repo(repo_id)
        with self.hub._lock:
            branches = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                for n, s in repo.branches.items()
            ]
            tags = [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s}
                for n, s in repo.tags.items()
            ]
            prs = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": s}
                for n, s in repo.pull_requests.items()
            ]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
        if self.query.get("include_prs"):
            payload["pullRequests"] = prs
        return self._json(200, payload)

    def _branch(self, repo_id: str, branch: str, method: str) -> int:
        repo = self._get_repo(repo_id)
        self._check_write(repo)
        with self.hub._lock:
            if method == "DELETE":
                if branch not in repo.branches or branch == "main":
                    raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
                del repo.branches[branch]
                return self._json(200, {})
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            start = self._json_body().get("startingPoint") or "main"
            repo.branches[branch] = self._revision(repo, start)
        return self._json(200, {})

    def _preupload(self, repo_id: str, revision: str) -> int:
        repo = self._get_repo(repo_id)
        self._check_write(repo)
        files = self._json_body().get("files") or []
        with self.hub._lock:
            head = repo.commits[self._revision(repo, revision)]
            answer = []
            for item in files:
                path, size = item["path"], int(item["size"])
                sample = base64.b64decode(item.get("sample") or "")
                lfs = wants_lfs(path, size, sample)
                entry = head.files.get(path)
                oid = None
                if entry is not None:
                    oid = entry.lfs_oid if entry.is_lfs else entry.blob_id
                answer.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
        return self._json(200, {"files": answer, "commitOid": head.oid})

    def _lfs_batch(self, repo_id: str) -> int:
        repo = self._get_repo(repo_id)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "the test hub only implements LFS uploads")
        self._check_write(repo)
        objects = []
        with self.hub._lock:
            for obj in payload.get("objects") or []:
                oid, size = obj["oid"], int(obj["size"])
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                # An object the repo already holds gets no actions: the client skips it. This is
                # what lets a retried upload send only what is missing.
                if oid not in repo.lfs_oids or oid not in self.hub._blobs:
                    item["actions"] = {
                        "upload": {"href": f"{self.hub.url}/lfs-storage/{oid}?repo={repo_id}"},
                        "verify": {"href": f"{self.hub.url}/{repo_id}.git/info/lfs/objects/verify"},
                    }
                objects.append(item)
        return self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, oid: str) -> int:
        # Plays the storage bucket behind a signed URL: no bearer token, content-addressed.
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        repo_id = self.query.get("repo", "")
        with self.hub._lock:
            self.hub._blobs[oid] = self.body
            if repo_id in self.hub._repos:
                self.hub._repos[repo_id].lfs_oids.add(oid)
        return self._send(200, b"", headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_id: str) -> int:
        repo = self._get_repo(repo_id)
        payload = self._json_body()
        with self.hub._lock:
            blob = self.hub._blobs.get(payload.get("oid", ""))
            present = blob is not None and payload.get("oid") in repo.lfs_oids
        if not present or len(blob or b"") != int(payload.get("size", -1)):
            raise HubError(404, "object not found or of the wrong size")
        return self._json(200, {})

    def _commit(self, repo_id: str, revision: str) -> int:
        repo = self._get_repo(repo_id)
        self._check_write(repo)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = self.query.get("create_pr") in ("1", "true")
        with self.hub._lock:
            base = self._revision(repo, revision)
            parent = header.get("parentCommit")
            if parent and not create_pr and not base.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.commits[base].files)
            for op in lines[1:]:
                self._apply_operation(repo, tree, op)
            commit = self.hub._new_commit(
                repo, base, header.get("summary") or "", header.get("description") or "", tree
            )
            pr_url = pr_revision = None
            if create_pr:
                number = max(repo.pull_requests, default=0) + 1
                repo.pull_requests[number] = commit.oid
                pr_url = f"{self.hub.url}/{repo_id}/discussions/{number}"
                pr_revision = f"refs/pr/{number}"
            elif revision in repo.branches:
                repo.branches[revision] = commit.oid
            else:
                raise HubError(400, f"cannot commit to {revision}: not a branch")
        return self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
                "pullRequestRevision": pr_revision,
            },
        )

    def _apply_operation(self, repo: Repo, tree: dict[str, FileEntry], op: dict) -> None:
        key, value = op.get("key"), op.get("value") or {}
        path = value.get("path", "")
        if key == "file":
            data = base64.b64decode(value["content"])
            tree[path] = FileEntry(size=len(data), content=data)
        elif key == "lfsFile":
            oid = value["oid"]
            blob = self.hub._blobs.get(oid)
            if blob is None or oid not in repo.lfs_oids:
                raise HubError(422, f"LFS object {oid} for {path} was never uploaded")
            tree[path] = FileEntry(size=len(blob), lfs_oid=oid)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(
                    404, f"A file with this name doesn't exist: {path}", code="EntryNotFound"
                )
        elif key == "deletedFolder":
            folder = path.rstrip("/") + "/"
            for name in [p for p in tree if p.startswith(folder)]:
                del tree[name]
        else:
            raise HubError(400, f"unsupported commit operation {key!r}")

    def _resolve(self, repo_id: str, revision: str, path: str) -> int:
        repo = self._get_repo(repo_id)
        self._check_download(repo)
        with self.hub._lock:
            sha = self._revision(repo, revision)
            entry = repo.commits[sha].files.get(path)
        if entry is None:
            raise HubError(
                404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": sha}
            )
        with self.hub._lock:
            data = self.hub._entry_bytes(entry)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if entry.is_lfs:
            headers.update(
                {
                    "ETag": f'"{entry.lfs_oid}"',
                    "X-Linked-Etag": f'"{entry.lfs_oid}"',
                    "X-Linked-Size": str(entry.size),
                }
            )
        else:
            headers["ETag"] = f'"{entry.blob_id}"'
        status, data = _apply_range(self.headers.get("Range"), data, headers)
        return self._send(status, data, content_type="application/octet-stream", headers=headers)

    def _web_page(self, repo_id: str) -> int:
        self._get_repo(repo_id)
        return self._send(200, b"<html>test hub</html>", content_type="text/html")


def _tree_entries(files: Mapping[str, FileEntry], prefix: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing: files and directories under ``prefix``, depth-first sorted."""
    base = prefix + "/" if prefix else ""
    entries: dict[str, dict] = {}
    for path in sorted(files):
        if not path.startswith(base):
            continue
        rel_parts = path[len(base) :].split("/")
        # Directories on the way down are listed too (only the first level when not recursive).
        for depth in range(1, len(rel_parts)):
            directory = base + "/".join(rel_parts[:depth])
            if directory not in entries:
                tree_id = hashlib.sha1(directory.encode()).hexdigest()
                entries[directory] = {
                    "type": "directory",
                    "oid": tree_id,
                    "size": 0,
                    "path": directory,
                }
            if not recursive:
                break
        if len(rel_parts) > 1 and not recursive:
            continue
        entry = files[path]
        item: dict[str, Any] = {
            "type": "file",
            "oid": entry.blob_id,
            "size": entry.size,
            "path": path,
        }
        if entry.lfs_oid is not None:
            pointer = lfs_pointer(entry.lfs_oid, entry.size)
            item["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": len(pointer)}
        entries[path] = item
    return list(entries.values())


def _apply_range(
    range_header: str | None, data: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """Honour a single ``bytes=a-b`` range (resumed downloads); anything else gets the whole body."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header or "")
    if not match or not (match.group(1) or match.group(2)):
        return 200, data
    size = len(data)
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:
        start, end = max(size - int(match.group(2)), 0), size - 1
    if start >= size or start > end:
        headers["Content-Range"] = f"bytes */{size}"
        return 416, b""
    end = min(end, size - 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return 206, data[start : end + 1]


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`HubServer`, with the environment pointed at it.

    Sets ``HF_ENDPOINT`` to the server, ``HF_HOME`` to a fresh temporary folder (so no real
    cache or saved token is used), ``HF_HUB_DISABLE_XET=1`` and quiet progress bars; unsets
    ``HF_TOKEN`` and ``HF_HUB_OFFLINE``. Tests pass ``hub_server.token`` or set ``HF_TOKEN``.
    """
    home = tmp_path / "hf_home"
    home.mkdir()
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
            monkeypatch.delenv(name, raising=False)
        yield server
        assert not server.internal_errors, server.internal_errors[0]


def write_tiny_checkpoint(folder: Path, *, seed: int = 0) -> dict[str, bytes]:
    """Write a small folder to push: two safetensors files (one nested), a config and a card.

    Returns every file's bytes by its path relative to ``folder``.
    """
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    save_file({"w": rng.standard_normal((8, 8)).astype(np.float32)}, folder / "model.safetensors")
    save_file(
        {"b": rng.standard_normal(4).astype(np.float32)}, folder / "sub" / "extra.safetensors"
    )
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return read_tree(folder)


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, by relative POSIX path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def require_lfs_uploads() -> None:
    """Fail clearly when the client would upload through Xet, which this server cannot speak."""
    import importlib.util

    from huggingface_hub import constants

    if not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None:
        pytest.fail(
            "huggingface_hub was imported before HF_HUB_DISABLE_XET=1 was set, so uploads would"
            " use Xet; set it at the top of tests/conftest.py"
        )
