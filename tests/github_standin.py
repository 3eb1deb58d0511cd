"""A local stand-in for the GitHub Releases endpoints that scripts/publish.py uses, with faults.

An http.server on 127.0.0.1 (port 0, a daemon thread) that keeps releases and assets in memory.
It behaves like github.com where the publisher depends on it: drafts are listed only to an
authenticated caller, `upload_url` is a URI template on a separate "uploads" path, asset names
are unique per release (422 already_exists, a `starter` asset included), assets carry
`state` and `digest`, listings are paginated with Link headers, and every answer carries the
x-ratelimit-* headers.

Faults are injected per endpoint with `fail(endpoint, kind, times=...)`:
    before the request takes effect: "500", "502", "drop" (close the socket, no answer),
        "403-secondary" (Retry-After), "429" (Retry-After), "429-bare" (no hint),
        "403-primary" (x-ratelimit-remaining: 0 and x-ratelimit-reset)
    after it took effect: "drop-after" (answer lost), "422-stored" (upload stored, answered 422
        already_exists), "502-starter" (upload: half the bytes kept as a `starter` asset, 502)
Endpoints: get_repo, list_releases, create_release, patch_release, list_assets, get_asset,
delete_asset, upload, download.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

PRE_FAULTS = ("500", "502", "drop", "403-secondary", "429", "429-bare", "403-primary")
POST_FAULTS = ("drop-after", "422-stored", "502-starter")
WRITES = ("POST", "PATCH", "DELETE", "PUT")


@dataclass
class Asset:
    id: int
    name: str
    data: bytes
    state: str = "uploaded"
    content_type: str = "application/octet-stream"


@dataclass
class Release:
    id: int
    tag_name: str
    draft: bool
    assets: list[Asset] = field(default_factory=list)

    def asset(self, name: str) -> Asset | None:
        return next((a for a in self.assets if a.name == name), None)


@dataclass
class Fault:
    endpoint: str
    kind: str
    times: int = 1
    name: str | None = None  # uploads: only this asset name
    seconds: float = 3.0  # rate-limit faults: Retry-After, or the distance to x-ratelimit-reset


class GitHubStandIn:
    def __init__(self, owner: str = "octo", repo: str = "wheels", token: str = "s3cret",
                 page_size: int = 2, digests: bool = True):
        self.owner, self.repo, self.token = owner, repo, token
        self.page_size = page_size  # fewer items per page than asked for, so pagination is exercised
        self.digests = digests
        self.releases: list[Release] = []
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str]] = []
        self.counts: Counter = Counter()
        self.deleted: list[tuple[str, str]] = []  # (name, state) of every deleted asset
        self.fired: list[str] = []
        self._ids = iter(range(1000, 10**9))
        self._lock = threading.Lock()
        self._routes = self._make_routes()

    # -- life cycle

    def __enter__(self):
        handler = type("Handler", (_Handler,), {"standin": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/v3"  # a path below the host, like GitHub Enterprise Server

    # -- test helpers

    def add_release(self, tag: str, draft: bool = True, assets: dict[str, bytes] | None = None,
                    starters: dict[str, bytes] | None = None) -> Release:
        release = Release(next(self._ids), tag, draft)
        for name, data in (assets or {}).items():
            release.assets.append(Asset(next(self._ids), name, data))
        for name, data in (starters or {}).items():
            release.assets.append(Asset(next(self._ids), name, data, state="starter"))
        self.releases.append(release)
        return release

    def releases_for(self, tag: str) -> list[Release]:
        return [r for r in self.releases if r.tag_name == tag]

    def fail(self, endpoint: str, kind: str, times: int = 1, name: str | None = None,
             seconds: float = 3.0) -> None:
        assert kind in PRE_FAULTS + POST_FAULTS, kind
        self.faults.append(Fault(endpoint, kind, times, name, seconds))

    def writes(self) -> int:
        return sum(self.counts[m] for m in WRITES)

    # -- request handling (serialised: one lock, like one consistent database)

    def handle(self, method: str, raw_path: str, headers, body: bytes):
        """Returns (status, headers, payload), or None to drop the connection without an answer."""
        with self._lock:
            parts = urlsplit(raw_path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self.log.append((method, parts.path))
            self.counts[method] += 1
            endpoint, args = self._route(method, parts.path)
            if endpoint is None:
                return _json(404, {"message": "Not Found"})
            fault = self._take_fault(endpoint, query)
            if fault and fault.kind in PRE_FAULTS:
                return _pre_fault(fault)
            auth = self._auth(headers)
            if auth == "bad":
                return _json(401, {"message": "Bad credentials"})
            reply = getattr(self, "_" + endpoint)(*args, query=query, headers=headers, body=body,
                                                    authed=auth == "ok", fault=fault)
            if fault and fault.kind == "drop-after":
                return None
            if fault and fault.kind == "422-stored":
                return _already_exists()
            return reply

    def _make_routes(self):
        repo = rf"/api/v3/repos/{re.escape(self.owner)}/{re.escape(self.repo)}"
        uploads = rf"/uploads/repos/{re.escape(self.owner)}/{re.escape(self.repo)}"
        return [
            ("GET", repo, "get_repo"),
            ("GET", rf"{repo}/releases", "list_releases"),
            ("POST", rf"{repo}/releases", "create_release"),
            ("PATCH", rf"{repo}/releases/(\d+)", "patch_release"),
            ("GET", rf"{repo}/releases/(\d+)/assets", "list_assets"),
            ("GET", rf"{repo}/releases/assets/(\d+)", "get_asset"),
            ("DELETE", rf"{repo}/releases/assets/(\d+)", "delete_asset"),
            ("POST", rf"{uploads}/releases/(\d+)/assets", "upload"),
            ("GET", r"/download/(\d+)", "download"),
        ]

    def _route(self, method: str, path: str):
        for verb, pattern, endpoint in self._routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return endpoint, [int(g) for g in match.groups()]
        return None, []

    def _take_fault(self, endpoint: str, query: dict) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint == endpoint and fault.times > 0 and fault.name in (None, query.get("name")):
                fault.times -= 1
                self.fired.append(f"{endpoint}:{fault.kind}")
                return fault
        return None

    def _auth(self, headers) -> str:
        given = headers.get("Authorization")
        if given is None:
            return "anonymous"
        return "ok" if given in (f"Bearer {self.token}", f"token {self.token}") else "bad"

    # -- JSON views

    def _release_json(self, r: Release) -> dict:
        repo = f"{self.owner}/{self.repo}"
        return {
            "id": r.id, "tag_name": r.tag_name, "name": r.tag_name, "draft": r.draft, "prerelease": False,
            "url": f"{self.api_url}/repos/{repo}/releases/{r.id}",
            "html_url": f"{self.base}/{repo}/releases/tag/{r.tag_name}",
            "upload_url": f"{self.base}/uploads/repos/{repo}/releases/{r.id}/assets{{?name,label}}",
            "assets": [self._asset_json(r, a) for a in r.assets],
        }

    def _asset_json(self, r: Release, a: Asset) -> dict:
        repo = f"{self.owner}/{self.repo}"
        digest = "sha256:" + hashlib.sha256(a.data).hexdigest() if self.digests and a.state == "uploaded" else None
        return {
            "id": a.id, "name": a.name, "label": "", "state": a.state, "content_type": a.content_type,
            "size": len(a.data), "digest": digest,
            "url": f"{self.api_url}/repos/{repo}/releases/assets/{a.id}",
            "browser_download_url": f"{self.base}/{repo}/releases/download/{r.tag_name}/{a.name}",
        }

    def _page(self, items: list, query: dict, path: str):
        asked = min(int(query.get("per_page", 30)), 100)
        size, page = min(asked, self.page_size), int(query.get("page", 1))
        chunk = items[(page - 1) * size: page * size]
        headers = {}
        last = max(1, -(-len(items) // size))
        if page < last:
            link = f"{self.base}{path}?{{}}"
            headers["Link"] = (f'<{link.format(urlencode({"per_page": asked, "page": page + 1}))}>; rel="next", '
                               f'<{link.format(urlencode({"per_page": asked, "page": last}))}>; rel="last"')
        return _json(200, chunk, headers)

    def _find_asset(self, asset_id: int):
        for r in self.releases:
            for a in r.assets:
                if a.id == asset_id:
                    return r, a
        return None, None

    def _release_by_id(self, release_id: int, authed: bool) -> Release | None:
        r = next((r for r in self.releases if r.id == release_id), None)
        return None if r is None or (r.draft and not authed) else r

    # -- endpoints

    def _get_repo(self, **kw):
        return _json(200, {"id": 1, "full_name": f"{self.owner}/{self.repo}", "private": False})

    def _list_releases(self, query, authed, **kw):
        visible = [self._release_json(r) for r in reversed(self.releases) if authed or not r.draft]
        return self._page(visible, query, f"/api/v3/repos/{self.owner}/{self.repo}/releases")

    def _create_release(self, body, authed, **kw):
        if not authed:
            return _json(401, {"message": "Requires authentication"})
        data = json.loads(body or b"{}")
        tag = data.get("tag_name")
        if not tag:
            return _json(422, {"message": "Validation Failed", "errors": [{"field": "tag_name",
                                                                          "code": "missing_field"}]})
        if any(r.tag_name == tag and not r.draft for r in self.releases):
            return _already_exists("Release", "tag_name")
        release = Release(next(self._ids), tag, bool(data.get("draft")))
        self.releases.append(release)
        return _json(201, self._release_json(release))

    def _patch_release(self, release_id, body, authed, **kw):
        release = self._release_by_id(release_id, authed)
        if release is None:
            return _json(404, {"message": "Not Found"})
        if not authed:
            return _json(401, {"message": "Requires authentication"})
        data = json.loads(body or b"{}")
        if "draft" in data:
            release.draft = bool(data["draft"])
        return _json(200, self._release_json(release))

    def _list_assets(self, release_id, query, authed, **kw):
        release = self._release_by_id(release_id, authed)
        if release is None:
            return _json(404, {"message": "Not Found"})
        items = [self._asset_json(release, a) for a in release.assets]
        return self._page(items, query, f"/api/v3/repos/{self.owner}/{self.repo}/releases/{release_id}/assets")

    def _get_asset(self, asset_id, headers, authed, **kw):
        release, asset = self._find_asset(asset_id)
        if asset is None or (release.draft and not authed):
            return _json(404, {"message": "Not Found"})
        if "application/octet-stream" in (headers.get("Accept") or ""):
            # github.com answers with a redirect to a signed storage address.
            return 302, {"Location": f"{self.base}/download/{asset_id}"}, b""
        return _json(200, self._asset_json(release, asset))

    def _download(self, asset_id, **kw):
        _, asset = self._find_asset(asset_id)
        if asset is None:
            return _json(404, {"message": "Not Found"})
        return 200, {"Content-Type": "application/octet-stream"}, asset.data

    def _delete_asset(self, asset_id, authed, **kw):
        if not authed:
            return _json(401, {"message": "Requires authentication"})
        release, asset = self._find_asset(asset_id)
        if asset is None:
            return _json(404, {"message": "Not Found"})
        release.assets.remove(asset)
        self.deleted.append((asset.name, asset.state))
        return 204, {}, b""

    def _upload(self, release_id, query, headers, body, authed, fault, **kw):
        if not authed:
            return _json(401, {"message": "Requires authentication"})
        release = self._release_by_id(release_id, authed)
        if release is None:
            return _json(404, {"message": "Not Found"})
        name, content_type = query.get("name"), headers.get("Content-Type")
        if not name or not content_type:
            return _json(422, {"message": "Validation Failed: name and Content-Type are required"})
        if int(headers.get("Content-Length") or -1) != len(body):
            return _json(400, {"message": "Bad Content-Length"})
        if release.asset(name):
            return _already_exists()
        if fault and fault.kind == "502-starter":
            release.assets.append(Asset(next(self._ids), name, body[: len(body) // 2], "starter", content_type))
            return _json(502, {"message": "Error uploading asset"})
        asset = Asset(next(self._ids), name, body, "uploaded", content_type)
        release.assets.append(asset)
        return _json(201, self._asset_json(release, asset))


def _rate_headers(remaining: int = 4999, reset_in: float = 3600) -> dict:
    return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(int(time.time() + reset_in)), "x-ratelimit-resource": "core"}


def _json(status: int, data, headers: dict | None = None):
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, \
        json.dumps(data).encode()


def _already_exists(resource: str = "ReleaseAsset", field_name: str = "name"):
    return _json(422, {"message": "Validation Failed",
                       "errors": [{"resource": resource, "code": "already_exists", "field": field_name}]})


def _pre_fault(fault: Fault):
    if fault.kind == "drop":
        return None
    if fault.kind in ("500", "502"):
        return _json(int(fault.kind), {"message": "Server Error"})
    if fault.kind == "403-secondary":
        return _json(403, {"message": "You have exceeded a secondary rate limit. Please wait a few minutes "
                                      "before you try again."}, {"Retry-After": str(int(fault.seconds))})
    if fault.kind == "429":
        return _json(429, {"message": "Too Many Requests"}, {"Retry-After": str(int(fault.seconds))})
    if fault.kind == "429-bare":
        return _json(429, {"message": "Too Many Requests"})
    # 403-primary: the hourly quota is spent until x-ratelimit-reset.
    return _json(403, {"message": "API rate limit exceeded for user ID 1."}, _rate_headers(0, fault.seconds))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API: a dropped connection is a pooled one
    standin: GitHubStandIn

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle's algorithm and the client's delayed
        # ACK each answer would wait ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.standin.handle(self.command, self.path, self.headers, body)
        if reply is None:  # the dropped connection: no status line at all
            self.close_connection = True
            return
        status, headers, payload = reply
        self.send_response(status)
        for key, value in {**_rate_headers(), **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve
