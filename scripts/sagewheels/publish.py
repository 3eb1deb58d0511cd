"""Upload a release folder (wheels, SHA256SUMS, manifest.json) to a GitHub release, idempotently.

    python scripts/publish.py --repo OWNER/NAME --tag TAG [--dry-run] [--replace] DIR

The token comes from GITHUB_TOKEN, the API root from GITHUB_API_URL (default
https://api.github.com), the upload address from the release's `upload_url`.

Re-running the same command is the recovery procedure for every failure, so each step first
looks at what is already on GitHub: an asset with the same name and sha256 is skipped, a
`starter` asset (what a broken upload leaves behind) is deleted, and a failed request that may
have taken effect anyway (a create or an upload whose answer was lost) is reconciled by
listing again before it is repeated. Nothing is replaced without --replace, and never on a
published release. The draft is published only once every local file is on it exactly once,
complete and with a matching sha256.

Stand-alone on purpose (requests and the standard library only): a release job can run it
without the rest of the wheel tools.
"""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import requests

DEFAULT_API = "https://api.github.com"
API_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "sageattention-publish",
}
# (connect, read) seconds. An upload's answer only comes once GitHub has stored the whole file.
API_TIMEOUT = (10, 60)
UPLOAD_TIMEOUT = (10, 600)
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
# A rate limit that lifts later than this is reported (with the time) instead of waited out:
# a CI job sleeping for most of an hour looks hung and may be killed halfway.
MAX_WAIT_S = 900.0
# GitHub's advice for a secondary rate limit that names no time: wait at least a minute.
UNHINTED_RATE_LIMIT_WAIT_S = 60.0
MAX_ASSET_BYTES = 2 * 1024**3  # GitHub refuses release assets of 2 GiB and more
PER_PAGE = 100
MAX_PAGES = 100
CHUNK = 1 << 20
# Index consumers read SHA256SUMS and manifest.json as "the release is complete": they go last.
LAST = ("SHA256SUMS", "manifest.json")
# GitHub silently renames assets with other characters (and leading/trailing dots); a renamed
# asset would no longer match SHA256SUMS, manifest.json or the pip index, so such names are refused.
SAFE_NAME = re.compile(r"[A-Za-z0-9_+-]([A-Za-z0-9._+-]*[A-Za-z0-9_+-])?")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# Injectable for tests (module attributes, looked up at call time).
sleep = time.sleep
clock = time.time
monotonic = time.monotonic


class PublishError(Exception):
    """A failure the user can act on; str() is the one line printed, ending with what to do."""


class Transient(Exception):
    """A failure worth retrying. kind: network | server | rate; wait: seconds the server asked for."""

    def __init__(self, reason: str, kind: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.wait = wait


class AlreadyExists(Exception):
    """The upload was answered 422 already_exists: some asset holds the name."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    name: str
    size: int
    sha256: str


@dataclass
class Step:
    file: LocalFile
    action: str  # skip | upload | replace
    asset: dict | None


# ---------------------------------------------------------------- local files


def local_files(folder: Path) -> list[LocalFile]:
    """Every regular file directly in `folder`, checked and hashed, in upload order."""
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: pass the folder that holds the wheels, "
                           "SHA256SUMS and manifest.json")
    try:
        paths = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise PublishError(f"cannot read {folder} ({exc.strerror}): check the path and its permissions")
    if not paths:
        raise PublishError(f"{folder} holds no files: build the wheels and run scripts/make_index.py "
                           "into it first")
    files = sorted((describe(p) for p in paths), key=upload_order)
    check_sums_file(files)
    return files


def upload_order(f: LocalFile) -> tuple:
    return (LAST.index(f.name) + 1 if f.name in LAST else 0, f.name)


def describe(path: Path) -> LocalFile:
    name = path.name
    if not SAFE_NAME.fullmatch(name):
        raise PublishError(f"{name}: GitHub would rename this asset (allowed: letters, digits, . _ + -, "
                           "no leading or trailing dot): rename or remove the file")
    size = path.stat().st_size
    if size == 0:
        raise PublishError(f"{name} is empty: GitHub does not store empty assets; rebuild or remove it")
    if size >= MAX_ASSET_BYTES:
        raise PublishError(f"{name} is {human(size)}: GitHub release assets must be under 2 GiB")
    return LocalFile(path, name, size, file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sums_file(files: list[LocalFile]) -> None:
    """A SHA256SUMS that disagrees with the files beside it would publish a broken release."""
    by_name = {f.name: f for f in files}
    sums = by_name.get("SHA256SUMS")
    if sums is None:
        return
    lines = sums.path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise PublishError(f"SHA256SUMS line {number} is not '<sha256>  <file>': regenerate it with "
                               "scripts/make_index.py")
        expected, listed = match.group(1).lower(), match.group(2).rsplit("/", 1)[-1]
        local = by_name.get(listed)
        if local is None:
            raise PublishError(f"SHA256SUMS lists {listed}, which is not in {sums.path.parent}: "
                               "copy it there or regenerate SHA256SUMS")
        if local.sha256 != expected:
            raise PublishError(f"{listed} does not match its SHA256SUMS line: the file changed after "
                               "SHA256SUMS was written; regenerate it with scripts/make_index.py")


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# ---------------------------------------------------------------- HTTP with retries


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def message_of(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return one_line(resp.text[:200]) or resp.reason or ""
    text = data.get("message", "") if isinstance(data, dict) else ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list) and errors:
        codes = [e.get("code", "") if isinstance(e, dict) else str(e) for e in errors]
        text = f"{text} ({', '.join(c for c in codes if c)})"
    return one_line(text)


def is_rate_limited(resp: requests.Response) -> bool:
    """403 is also "no permission"; only these signs make it a rate limit worth waiting for."""
    if resp.status_code == 429:
        return True
    if resp.status_code != 403:
        return False
    return ("Retry-After" in resp.headers or resp.headers.get("x-ratelimit-remaining") == "0"
            or "rate limit" in message_of(resp).lower())


def rate_limit_wait(resp: requests.Response) -> float | None:
    """Seconds the answer asks us to wait: Retry-After first, then the primary limit's reset."""
    retry_after = resp.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(retry_after).timestamp() - clock())
            except (TypeError, ValueError):
                pass
    if resp.headers.get("x-ratelimit-remaining") == "0":
        try:
            # +1: the reset time has whole seconds, and asking a moment early costs another 403.
            return max(0.0, float(resp.headers["x-ratelimit-reset"]) - clock()) + 1.0
        except (KeyError, ValueError):
            pass
    return None


def classify(resp: requests.Response) -> Transient | None:
    if resp.status_code >= 500:
        return Transient(f"{resp.status_code} {resp.reason}", "server")
    if resp.status_code in (403, 429) and is_rate_limited(resp):
        return Transient(f"{resp.status_code} rate limited ({message_of(resp)})", "rate", rate_limit_wait(resp))
    return None


NETWORK_REASONS = (
    ("Connection refused", "connection refused"),
    ("RemoteDisconnected", "connection closed without an answer"),
    ("reset by peer", "connection reset"),
    ("Connection aborted", "connection dropped"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("nodename nor servname", "host name not found"),
    ("getaddrinfo failed", "host name not found"),
)


def network_reason(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    text = str(exc)
    for needle, label in NETWORK_REASONS:
        if needle in text:
            return label
    return type(exc).__name__


def backoff(attempt: int) -> float:
    """Exponential with jitter (so parallel jobs do not retry in step), capped."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class Api:
    """The GitHub API: one session, a timeout on every request, retries only where repeating is safe."""

    def __init__(self, root: str, token: str, session: requests.Session, sleep_fn=None):
        self.root = root.rstrip("/")
        self.token = token
        self.session = session
        self.session.headers.update(API_HEADERS)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.sleep = sleep_fn or (lambda seconds: sleep(seconds))

    def url(self, path: str) -> str:
        return self.root + path

    def send(self, method: str, url: str, **kwargs) -> requests.Response:
        """One request. Raises Transient for what is worth retrying; returns every other answer."""
        kwargs.setdefault("timeout", API_TIMEOUT)
        try:
            resp = self.session.request(method, url, **kwargs)
        except NETWORK_ERRORS as exc:
            raise Transient(network_reason(exc), "network") from None
        transient = classify(resp)
        if transient:
            resp.close()
            raise transient
        return resp

    def call(self, method: str, url: str, what: str, **kwargs) -> requests.Response:
        """send() with bounded retries, for requests that are safe to repeat (GET, PATCH, DELETE)."""
        attempt = 1
        while True:
            try:
                return self.send(method, url, **kwargs)
            except Transient as failure:
                self.pause(failure, attempt, what)
                attempt += 1

    def pause(self, failure: Transient, attempt: int, what: str) -> None:
        """Wait before attempt+1, or raise the one-line error when there is no attempt left."""
        if attempt >= MAX_ATTEMPTS:
            raise PublishError(self.gave_up(failure, what))
        if failure.wait is not None:
            delay = failure.wait
        elif failure.kind == "rate":
            delay = UNHINTED_RATE_LIMIT_WAIT_S * 2 ** (attempt - 1)
        else:
            delay = backoff(attempt)
        if delay > MAX_WAIT_S:
            raise PublishError(f"{what}: GitHub rate limit; it lifts at {utc(clock() + delay)} "
                               f"(in {delay / 60:.0f} min): re-run the same command after that "
                               "(finished files are kept and skipped)")
        print(f"  retry {attempt}/{MAX_ATTEMPTS - 1}: {what}: {failure.reason}; waiting {delay:.1f} s",
              flush=True)
        self.sleep(delay)

    def gave_up(self, failure: Transient, what: str) -> str:
        tail = "re-run the same command (finished files are kept and skipped)"
        if failure.kind == "network":
            return (f"{what}: {failure.reason} ({urlsplit(self.root).netloc}), {MAX_ATTEMPTS} attempts: "
                    f"check the network and GITHUB_API_URL, then {tail}")
        if failure.kind == "rate":
            return f"{what}: still rate limited after {MAX_ATTEMPTS} attempts: wait an hour, then {tail}"
        return (f"{what}: GitHub answered {failure.reason} {MAX_ATTEMPTS} times: wait a few minutes, "
                f"then {tail}")


def json_of(resp: requests.Response, what: str):
    try:
        return resp.json()
    except ValueError:
        raise PublishError(f"{what}: the answer ({resp.status_code}) is not JSON: check that GITHUB_API_URL "
                           "points at the GitHub API") from None


def is_already_exists(resp: requests.Response) -> bool:
    if resp.status_code != 422:
        return False
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("code") == "already_exists" for e in errors)


# ---------------------------------------------------------------- the release


class Publisher:
    def __init__(self, api: Api, repo: str, tag: str, folder: Path, files: list[LocalFile],
                 dry_run: bool, replace: bool):
        self.api = api
        self.repo = repo
        self.tag = tag
        self.folder = folder
        self.files = files
        self.dry_run = dry_run
        self.replace = replace
        self.remote_sha: dict[int, str] = {}  # asset id -> sha256 downloaded this run (hash once)
        self.changes = 0

    # -- reading

    def expect(self, resp: requests.Response, ok: tuple, what: str) -> requests.Response:
        if resp.status_code in ok:
            return resp
        status, text = resp.status_code, message_of(resp)
        if status == 401:
            raise PublishError(f"{what}: GitHub rejected the token (401 {text}): set GITHUB_TOKEN to a "
                               f"valid token that can write the contents of {self.repo}")
        if status == 403:
            raise PublishError(f"{what}: GitHub refused (403 {text}): the token needs write access to the "
                               f"contents of {self.repo} (contents: write)")
        if status == 404:
            hint = "" if self.api.token else " (without GITHUB_TOKEN, private repositories are invisible)"
            raise PublishError(f"{what}: not found (404){hint}: check --repo {self.repo} and that the token "
                               "can see the repository")
        raise PublishError(f"{what}: GitHub answered {status} {text}: re-run the same command; if it "
                           "persists, look at the release on GitHub")

    def get_json(self, url: str, what: str, **kwargs):
        resp = self.api.call("GET", url, what, **kwargs)
        return json_of(self.expect(resp, (200,), what), what)

    def pages(self, path: str, what: str) -> Iterator[dict]:
        """Every item of a listing, following the Link: rel="next" pages."""
        url, params = self.api.url(path), {"per_page": PER_PAGE}
        for _ in range(MAX_PAGES):
            resp = self.expect(self.api.call("GET", url, what, params=params), (200,), what)
            items = json_of(resp, what)
            if not isinstance(items, list):
                raise PublishError(f"{what}: expected a list from GitHub: check GITHUB_API_URL")
            yield from items
            url, params = resp.links.get("next", {}).get("url"), None
            if not url:
                return
        raise PublishError(f"{what}: more than {MAX_PAGES} pages: delete old releases, then re-run")

    def check_repo(self) -> None:
        """Fail early, with the clearest message, on a wrong --repo, token or API root."""
        self.get_json(self.api.url(f"/repos/{self.repo}"), f"reading repository {self.repo}")

    def find_release(self) -> dict | None:
        # GET /releases/tags/{tag} never returns drafts, and a draft is what an interrupted run leaves.
        what = f"listing the releases of {self.repo}"
        found = [r for r in self.pages(f"/repos/{self.repo}/releases", what) if r.get("tag_name") == self.tag]
        if len(found) > 1:
            ids = ", ".join(str(r.get("id")) for r in found)
            raise PublishError(f"{len(found)} releases carry tag {self.tag} (ids {ids}): delete the extra "
                               "drafts on GitHub, keep one, then re-run")
        return found[0] if found else None

    def list_assets(self, release: dict) -> list[dict]:
        what = f"listing the assets of release {self.tag}"
        return list(self.pages(f"/repos/{self.repo}/releases/{release['id']}/assets", what))

    def matches(self, asset: dict, f: LocalFile) -> bool:
        """Same size and sha256: GitHub's digest when it has one, else the downloaded bytes."""
        if asset.get("state") != "uploaded" or asset.get("size") != f.size:
            return False
        digest = asset.get("digest")
        if isinstance(digest, str) and digest.startswith("sha256:"):
            return digest[len("sha256:"):].lower() == f.sha256
        if asset["id"] not in self.remote_sha:
            self.remote_sha[asset["id"]] = self.download_sha256(asset, f.size)
        return self.remote_sha[asset["id"]] == f.sha256

    def download_sha256(self, asset: dict, size: int) -> str:
        """Hash an asset while streaming it; reads at most size+1 bytes (more means: different)."""
        what = f"downloading {asset.get('name')} to compare it"
        # The asset API works for drafts and private repositories, browser_download_url does not.
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self.hash_stream(asset["url"], size, what)
            except Transient as failure:
                self.api.pause(failure, attempt, what)
        raise PublishError(f"{what}: failed {MAX_ATTEMPTS} times: re-run the same command")

    def hash_stream(self, url: str, size: int, what: str) -> str:
        resp = self.api.send("GET", url, headers={"Accept": "application/octet-stream"}, stream=True)
        with resp:
            self.expect(resp, (200,), what)
            digest, seen = hashlib.sha256(), 0
            try:
                for chunk in resp.iter_content(CHUNK):
                    seen += len(chunk)
                    if seen > size:
                        return "larger than the local file"
                    digest.update(chunk)
            except NETWORK_ERRORS as exc:
                raise Transient(network_reason(exc), "network") from None
        return digest.hexdigest() if seen == size else "smaller than the local file"

    # -- planning (reads only: a refused run changes nothing)

    def plan(self, release: dict | None, assets: list[dict]) -> tuple[list[Step], list[dict], list[str]]:
        starters = [a for a in assets if a.get("state") != "uploaded"]
        by_name = {a["name"]: a for a in assets if a.get("state") == "uploaded"}
        steps = []
        for f in self.files:
            asset = by_name.get(f.name)
            if asset is None:
                steps.append(Step(f, "upload", None))
            else:
                steps.append(Step(f, "skip" if self.matches(asset, f) else "replace", asset))
        conflicts = [s.file.name for s in steps if s.action == "replace"]
        if conflicts:
            self.refuse_or_allow(release, conflicts)
        needs_change = starters or any(s.action != "skip" for s in steps)
        if release and not release.get("draft") and release.get("immutable") and needs_change:
            raise PublishError(f"release {self.tag} is published and immutable: its assets cannot change; "
                               "publish these files under a new tag")
        extras = sorted(set(by_name) - {f.name for f in self.files})
        return steps, starters, extras

    def refuse_or_allow(self, release: dict, conflicts: list[str]) -> None:
        names = ", ".join(conflicts) + (" differs" if len(conflicts) == 1 else " differ")
        if not self.replace:
            raise PublishError(f"{names} from the asset of the same name on release {self.tag}; nothing was "
                               "changed: re-run with --replace to replace (only while the release is a draft)")
        if not release.get("draft"):
            raise PublishError(f"{names} from the asset of the same name on published release {self.tag}; "
                               "nothing was changed: published assets are never replaced, publish under a "
                               "new tag")

    # -- changing

    def create_release(self) -> dict:
        what = f"creating draft release {self.tag}"
        body = {"tag_name": self.tag, "name": self.tag, "draft": True}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                resp = self.api.send("POST", self.api.url(f"/repos/{self.repo}/releases"), json=body)
            except Transient as failure:
                self.api.pause(failure, attempt, what)
                # The release may exist although its answer was lost: creating again would
                # leave two drafts with the same tag.
                found = self.find_release()
                if found:
                    return found
                continue
            return json_of(self.expect(resp, (201,), what), what)
        raise PublishError(f"{what}: failed {MAX_ATTEMPTS} times: re-run the same command")

    def delete_asset(self, asset: dict, why: str) -> None:
        what = f"deleting {why} {asset.get('name')}"
        resp = self.api.call("DELETE", self.api.url(f"/repos/{self.repo}/releases/assets/{asset['id']}"), what)
        if resp.status_code != 404:  # 404: gone already (a repeated DELETE whose answer was lost)
            self.expect(resp, (204,), what)
        self.changes += 1

    def upload_base(self, release: dict) -> str:
        # upload_url is a URI template: ".../assets{?name,label}".
        return re.sub(r"\{[^}]*\}$", "", release["upload_url"])

    def upload(self, release: dict, f: LocalFile) -> dict:
        """Upload until the asset is verifiably there; after any failure look before trying again."""
        what = f"uploading {f.name}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self.confirm(self.post_file(self.upload_base(release), f), f)
            except Transient as failure:
                self.api.pause(failure, attempt, what)
            except AlreadyExists:
                self.api.sleep(backoff(attempt))  # the listing may lag behind the upload
            found = self.reconcile(release, f)
            if found:
                return found
        raise PublishError(f"{what}: GitHub reported the name as taken but never listed it, "
                           f"{MAX_ATTEMPTS} attempts: look at release {self.tag} on GitHub, then re-run")

    def post_file(self, url: str, f: LocalFile) -> dict:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(f.size)}
        with f.path.open("rb") as body:  # a file object: requests streams it, never reads it whole
            resp = self.api.send("POST", url, params={"name": f.name}, data=body, headers=headers,
                                 timeout=UPLOAD_TIMEOUT)
        if is_already_exists(resp):
            raise AlreadyExists()
        return json_of(self.expect(resp, (201,), f"uploading {f.name}"), f"uploading {f.name}")

    def confirm(self, asset: dict, f: LocalFile) -> dict:
        if asset.get("name") != f.name:
            raise PublishError(f"GitHub stored {f.name} as {asset.get('name')}: delete that asset on the "
                               "release, rename the file, then re-run")
        digest = asset.get("digest")
        bad_digest = isinstance(digest, str) and digest.startswith("sha256:") and digest[7:] != f.sha256
        if asset.get("state") != "uploaded" or asset.get("size") != f.size or bad_digest:
            raise PublishError(f"{f.name}: GitHub stored other bytes than were sent (state {asset.get('state')}, "
                               f"size {asset.get('size')}, {digest}): re-run with --replace")
        return asset

    def reconcile(self, release: dict, f: LocalFile) -> dict | None:
        """After a failed upload: it may have succeeded, left a starter, or stored nothing."""
        current = next((a for a in self.list_assets(release) if a.get("name") == f.name), None)
        if current is None:
            return None
        if current.get("state") != "uploaded":
            self.delete_asset(current, "the starter asset of the broken upload")
            print(f"  deleted the starter asset the failed upload of {f.name} left", flush=True)
            return None
        if self.matches(current, f):
            return current
        raise PublishError(f"{f.name}: after a failed upload, release {self.tag} holds an asset of that name "
                           "with other content (another publisher running?): check the release, delete "
                           "that asset, then re-run")

    def publish(self, release: dict) -> dict:
        what = f"publishing release {self.tag}"
        url = self.api.url(f"/repos/{self.repo}/releases/{release['id']}")
        # PATCH is safe to repeat: a second draft=false on a published release changes nothing.
        data = json_of(self.expect(self.api.call("PATCH", url, what, json={"draft": False}), (200,), what), what)
        if data.get("draft") is not False:
            raise PublishError(f"{what}: GitHub still reports a draft: re-run the same command")
        self.changes += 1
        return data

    # -- the run

    def run(self) -> int:
        if not self.api.token:
            print("note: no GITHUB_TOKEN: reading anonymously, so draft releases are invisible")
        self.check_repo()
        release = self.find_release()
        if release is None and self.dry_run:
            print(f"would create draft release {self.tag}")
        elif release is None:
            release = self.create_release()
            self.changes += 1
            print(f"created draft release {self.tag} (id {release.get('id')})")
        elif not release.get("draft"):
            print(f"release {self.tag} (id {release.get('id')}) is published: only missing files are added")
        else:
            print(f"found draft release {self.tag} (id {release.get('id')})")
        assets = self.list_assets(release) if release else []
        steps, starters, extras = self.plan(release, assets)
        for name in extras:
            print(f"note: {name} is on the release but not in {self.folder}: left alone")
        self.clean_starters(starters)
        for step in steps:
            self.do_step(release, step)
        return self.finish(release, steps, starters)

    def clean_starters(self, starters: list[dict]) -> None:
        for asset in starters:
            if self.dry_run:
                print(f"would delete leftover starter asset {asset.get('name')} (a broken upload)")
            else:
                self.delete_asset(asset, "leftover starter asset")
                print(f"deleted leftover starter asset {asset.get('name')} (a broken upload)")

    def do_step(self, release: dict | None, step: Step) -> None:
        started = monotonic()
        f = step.file
        if step.action == "skip":
            status = "skipped (already on the release, sha256 matches)"
        elif self.dry_run:
            status = "would replace (--replace, draft)" if step.action == "replace" else "would upload"
        else:
            if step.action == "replace":
                self.delete_asset(step.asset, "the old")
            self.upload(release, f)
            self.changes += 1
            status = "replaced" if step.action == "replace" else "uploaded"
        print(f"{f.name}  {human(f.size)}  {status}  {monotonic() - started:.1f} s", flush=True)

    def finish(self, release: dict | None, steps: list[Step], starters: list[dict]) -> int:
        counts = {a: sum(s.action == a for s in steps) for a in ("upload", "replace", "skip")}
        summary = f"{counts['upload']} uploaded, {counts['replace']} replaced, {counts['skip']} skipped"
        if self.dry_run:
            todo = counts["upload"] + counts["replace"] + len(starters)
            draft = release is None or release.get("draft")
            if not todo and not draft:
                print(f"dry run: release {self.tag} is complete and published: nothing would change")
            else:
                print(f"dry run: nothing was changed; a real run would make {todo} asset change(s)"
                      + (f" and publish the draft {self.tag}" if draft else ""))
            return 0
        self.verify_all(release)
        if release.get("draft"):
            release = self.publish(release)
        if not self.changes:
            print(f"release {self.tag}: all {len(self.files)} files present and verified, release "
                  "published: nothing to change")
        else:
            print(f"release {self.tag} published, {len(self.files)} files verified ({summary}): "
                  f"{release.get('html_url', '')}")
        return 0

    def verify_all(self, release: dict) -> None:
        """The condition for publishing: each local file exactly once, uploaded, same size and sha256."""
        assets = self.list_assets(release)
        problems = []
        for f in self.files:
            same = [a for a in assets if a.get("name") == f.name]
            if len(same) != 1:
                problems.append(f"{f.name}: {len(same)} assets")
            elif not self.matches(same[0], f):
                problems.append(f"{f.name}: differs")
        if problems:
            state = "stays a draft" if release.get("draft") else "is published but incomplete"
            raise PublishError(f"release {self.tag} {state} ({'; '.join(problems)}): re-run the same command")


# ---------------------------------------------------------------- command line


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"error: {one_line(message)}: see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="publish.py", description="Upload every file of DIR to the GitHub "
                           "release TAG (a draft until all files are verified), idempotently.")
    parser.add_argument("--repo", required=True, help="OWNER/NAME")
    parser.add_argument("--tag", required=True, help="release tag, e.g. v2.2.0.post1")
    parser.add_argument("--dry-run", action="store_true", help="read the API, change nothing, "
                        "print what would be done")
    parser.add_argument("--replace", action="store_true", help="replace assets whose content differs "
                        "(only while the release is a draft)")
    parser.add_argument("dir", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", args.repo):
        parser.error(f"--repo {args.repo!r} is not OWNER/NAME")
    if not args.tag.strip():
        parser.error("--tag is empty")
    return args


def api_root() -> str:
    root = os.environ.get("GITHUB_API_URL") or DEFAULT_API
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError(f"GITHUB_API_URL={root} is not an http(s) address: unset it for github.com")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise PublishError(f"GITHUB_API_URL={root} is plain http: the token would travel unencrypted; "
                           "use https")
    return root


def run(args: argparse.Namespace, sleep_fn=None) -> int:
    files = local_files(args.dir)
    token = os.environ.get("GITHUB_TOKEN", "").strip()
    if not token and not args.dry_run:
        raise PublishError("GITHUB_TOKEN is not set: export a token that can write the repository's contents "
                           "(contents: write), or pass --dry-run to only look")
    root = api_root()
    with requests.Session() as session:
        api = Api(root, token, session, sleep_fn)
        return Publisher(api, args.repo, args.tag, args.dir, files, args.dry_run, args.replace).run()


def main(argv: list[str] | None = None, sleep_fn=None) -> int:
    args = parse_args(argv)
    try:
        return run(args, sleep_fn)
    except PublishError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted: re-run the same command to resume (finished files are kept)",
              file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or one_line(exc)}: check the file and re-run", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001  (one line, never a traceback; the type names the bug)
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)}: re-run; if it repeats, report it "
              "with the command line", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
