"""scripts/publish.py against a local stand-in of the GitHub Releases API (tests/github_standin.py).

The property under test: whatever fails, re-running the same command converges on the right
release (each local file present exactly once, bytes identical, release published), with
nothing lost, duplicated or silently replaced; and a complete release is left untouched.
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from github_standin import Asset, GitHubStandIn
from sagewheels import publish

TAG = "v2.2.0.post1"
WHEELS = ("sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl",
          "sageattention-2.2.0.post1+cu128torch2.7.1-cp39-abi3-linux_x86_64.whl",
          "sageattention-2.2.0.post1+cu126torch2.6.0-cp312-cp312-win_amd64.whl")


@pytest.fixture
def wheeldir(tmp_path):
    """Three 'wheels' of random bytes plus a consistent SHA256SUMS and manifest.json."""
    folder = tmp_path / "dist"
    folder.mkdir()
    for i, name in enumerate(WHEELS):
        (folder / name).write_bytes(os.urandom(40_000 + 7_000 * i))
    sums = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in WHEELS)
    (folder / "SHA256SUMS").write_text(sums)
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "wheels": list(WHEELS)}))
    return folder


@pytest.fixture
def gh():
    with GitHubStandIn() as server:
        yield server


class Runner:
    """In-process main([...]) with the stand-in's address and token, sleeping recorded, not slept."""

    def __init__(self, gh, folder, monkeypatch, capsys):
        self.gh, self.folder, self.capsys = gh, folder, capsys
        self.sleeps = []
        monkeypatch.setenv("GITHUB_TOKEN", gh.token)
        monkeypatch.setenv("GITHUB_API_URL", gh.api_url)
        monkeypatch.setattr(publish, "sleep", self.sleeps.append)

    def __call__(self, *extra):
        rc = publish.main(["--repo", f"{self.gh.owner}/{self.gh.repo}", "--tag", TAG, *extra, str(self.folder)])
        self.out, self.err = self.capsys.readouterr()
        return rc


@pytest.fixture
def run(gh, wheeldir, monkeypatch, capsys):
    return Runner(gh, wheeldir, monkeypatch, capsys)


def local(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def assert_converged(gh, folder):
    releases = gh.releases_for(TAG)
    assert len(releases) == 1, "exactly one release for the tag (no duplicate drafts)"
    release = releases[0]
    assert not release.draft
    for name, data in local(folder).items():
        same = [a for a in release.assets if a.name == name]
        assert len(same) == 1 and same[0].state == "uploaded" and same[0].data == data, name
    assert not [a for a in release.assets if a.state != "uploaded"], "no starter asset left"


def assert_one_line_error(rc, err):
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def partial_draft(gh, folder):
    """What an interrupted run leaves: a draft with one good wheel and a starter of another."""
    files = local(folder)
    return gh.add_release(TAG, draft=True, assets={WHEELS[0]: files[WHEELS[0]]},
                          starters={WHEELS[1]: files[WHEELS[1]][:1000]})


# ---------------------------------------------------------------- the normal path


def test_fresh_publish_then_rerun_changes_nothing(gh, run):
    assert run() == 0, run.err
    assert_converged(gh, run.folder)
    # SHA256SUMS and manifest.json go last: consumers read them as "the release is complete".
    uploads = [line.split()[0] for line in run.out.splitlines() if line.endswith(" s") and "uploaded" in line]
    assert uploads[-2:] == ["SHA256SUMS", "manifest.json"]
    assert "uploaded" in run.out and "published" in run.out

    writes = gh.writes()
    assert run() == 0, run.err
    assert gh.writes() == writes, "a complete release gets no write request"
    assert "nothing to change" in run.out
    assert run.out.count("skipped") == len(local(run.folder))


def test_finds_draft_across_pages_and_cleans_starter(gh, run):
    """The draft is found in the paginated listing (the tags endpoint hides drafts)."""
    for i in range(5):
        gh.add_release(f"v0.{i}", draft=i % 2 == 0, assets={f"old{i}.whl": b"x"})
    release = partial_draft(gh, run.folder)
    kept_id = release.asset(WHEELS[0]).id
    for i in range(5, 9):
        gh.add_release(f"v0.{i}", draft=False)
    release.assets.insert(1, Asset(1, "notes.txt", b"someone else's"))  # not ours: must survive
    assert run() == 0, run.err
    assert_converged(gh, run.folder)
    assert release.asset(WHEELS[0]).id == kept_id, "a matching asset is kept, not re-uploaded"
    assert release.asset("notes.txt").data == b"someone else's", "assets not in DIR are left alone"
    assert gh.deleted == [(WHEELS[1], "starter")]
    assert "left alone" in run.out and "deleted leftover starter" in run.out
    assert sum(1 for m, p in gh.log if m == "GET" and p.endswith("/releases")) >= 5, "followed Link pages"


def test_without_digest_the_asset_is_downloaded_and_hashed(wheeldir, monkeypatch, capsys):
    with GitHubStandIn(digests=False) as gh:
        run = Runner(gh, wheeldir, monkeypatch, capsys)
        partial_draft(gh, wheeldir)
        assert run() == 0, run.err
        assert_converged(gh, wheeldir)
        downloads = sum(1 for m, p in gh.log if p.startswith("/download/"))
        assert downloads >= 1
        writes = gh.writes()
        assert run() == 0 and gh.writes() == writes
        # Same size, other bytes: only the download can tell, and it must refuse.
        name = WHEELS[2]
        original = (wheeldir / name).read_bytes()
        (wheeldir / name).write_bytes(bytes(b ^ 1 for b in original))
        (wheeldir / "SHA256SUMS").unlink()
        assert run() == 1
        assert "--replace" in run.err and gh.writes() == writes


# ---------------------------------------------------------------- faults, then a re-run

FAULTS = [
    ("fresh", "upload", "502-starter"),
    ("fresh", "upload", "drop"),
    ("fresh", "upload", "drop-after"),
    ("fresh", "upload", "500"),
    ("fresh", "upload", "422-stored"),
    ("fresh", "upload", "403-secondary"),
    ("fresh", "upload", "429"),
    ("fresh", "upload", "429-bare"),
    ("fresh", "list_assets", "403-primary"),
    ("fresh", "list_releases", "drop"),
    ("fresh", "create_release", "drop-after"),
    ("fresh", "create_release", "502"),
    ("fresh", "patch_release", "500"),
    ("fresh", "patch_release", "drop-after"),
    ("partial", "delete_asset", "drop-after"),
    ("partial", "get_repo", "403-secondary"),
]


@pytest.mark.parametrize("times", [1, 50], ids=["once", "persistent"])
@pytest.mark.parametrize("scenario,endpoint,kind", FAULTS, ids=[f"{e}-{k}" for _, e, k in FAULTS])
def test_fault_then_rerun_converges(gh, run, scenario, endpoint, kind, times):
    kept_id = None
    if scenario == "partial":
        kept_id = partial_draft(gh, run.folder).asset(WHEELS[0]).id
    gh.fail(endpoint, kind, times=times, name=WHEELS[1] if endpoint == "upload" else None)
    first = run()
    assert gh.fired, "the fault was reached"
    if first != 0:
        assert_one_line_error(first, run.err)
        assert times > 1, "a single fault is absorbed by the retries"
    gh.faults.clear()
    assert run() == 0, run.err
    assert_converged(gh, run.folder)
    assert all(state == "starter" for _, state in gh.deleted), "no good asset was deleted"
    if kept_id is not None:
        assert gh.releases_for(TAG)[0].asset(WHEELS[0]).id == kept_id
    if kind in ("403-secondary", "429"):
        assert 3.0 in run.sleeps, "Retry-After was honoured"
    if kind == "429-bare":
        assert 60.0 in run.sleeps, "a rate limit without a hint waits a minute"
    if kind == "403-primary":
        assert any(2.0 <= s <= 5.0 for s in run.sleeps), "slept until x-ratelimit-reset"


def test_backoff_is_bounded_exponential_with_jitter(gh, run):
    gh.fail("list_releases", "500", times=50)
    assert run() == 1
    assert len(run.sleeps) == publish.MAX_ATTEMPTS - 1
    for attempt, slept in enumerate(run.sleeps, 1):
        ceiling = min(publish.BACKOFF_CAP_S, publish.BACKOFF_BASE_S * 2 ** (attempt - 1))
        assert ceiling / 2 <= slept <= ceiling
    assert "answered 500" in run.err and "re-run" in run.err


def test_rate_limit_beyond_the_maximum_wait_says_when_to_retry(gh, run):
    gh.fail("list_releases", "403-primary", seconds=2 * 3600)
    assert run() == 1
    assert_one_line_error(1, run.err)
    assert "rate limit" in run.err and "UTC" in run.err and "re-run" in run.err
    assert not run.sleeps, "does not sleep for hours"
    assert gh.writes() == 0


# ---------------------------------------------------------------- refusals and dry runs


def test_different_content_refused_then_replaced_on_a_draft(gh, run):
    gh.add_release(TAG, draft=True, assets={WHEELS[0]: b"an older build"})
    assert run() == 1
    assert_one_line_error(1, run.err)
    assert "--replace" in run.err and "nothing was changed" in run.err
    assert gh.writes() == 0 and gh.releases_for(TAG)[0].asset(WHEELS[0]).data == b"an older build"

    assert run("--replace") == 0, run.err
    assert_converged(gh, run.folder)
    assert "replaced" in run.out


def test_replace_on_a_published_release_is_refused(gh, run):
    gh.add_release(TAG, draft=False, assets={WHEELS[0]: b"what users already downloaded"})
    assert run("--replace") == 1
    assert_one_line_error(1, run.err)
    assert "published" in run.err and "new tag" in run.err
    assert gh.writes() == 0
    assert gh.releases_for(TAG)[0].asset(WHEELS[0]).data == b"what users already downloaded"


def test_duplicate_drafts_for_the_tag_are_refused(gh, run):
    gh.add_release(TAG, draft=True)
    gh.add_release(TAG, draft=True)
    assert run() == 1
    assert "2 releases carry tag" in run.err and gh.writes() == 0


@pytest.mark.parametrize("scenario", ["fresh", "partial"])
def test_dry_run_changes_nothing(gh, run, scenario):
    if scenario == "partial":
        partial_draft(gh, run.folder)
    before = [(r.id, r.draft, [(a.id, a.state, a.data) for a in r.assets]) for r in gh.releases]
    assert run("--dry-run") == 0, run.err
    assert gh.writes() == 0
    assert [(r.id, r.draft, [(a.id, a.state, a.data) for a in r.assets]) for r in gh.releases] == before
    assert "would upload" in run.out and "dry run" in run.out
    if scenario == "fresh":
        assert "would create draft release" in run.out
    else:
        assert "would delete leftover starter" in run.out and "skipped" in run.out


def test_local_folder_problems_stop_before_any_request(gh, run):
    (run.folder / "SHA256SUMS").write_text("0" * 64 + f"  {WHEELS[0]}\n")
    assert run() == 1
    assert "SHA256SUMS" in run.err and not gh.log
    (run.folder / "SHA256SUMS").unlink()
    (run.folder / "bad name.whl").write_bytes(b"x")
    assert run() == 1
    assert "rename" in run.err and not gh.log


# ---------------------------------------------------------------- one-line errors, as a program


def cli(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "publish.py"), *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_failures_are_one_line_without_traceback(gh, wheeldir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"GITHUB_TOKEN": gh.token, "GITHUB_API_URL": gh.api_url}
    repo = f"{gh.owner}/{gh.repo}"
    cases = {
        "is not a folder": (["--repo", repo, "--tag", TAG, str(tmp_path / "missing")], env),
        "holds no files": (["--repo", repo, "--tag", TAG, str(empty)], env),
        "GITHUB_TOKEN is not set": (["--repo", repo, "--tag", TAG, str(wheeldir)],
                                    {"GITHUB_API_URL": gh.api_url}),
        "rejected the token (401": (["--repo", repo, "--tag", TAG, str(wheeldir)], {**env, "GITHUB_TOKEN": "x"}),
        "not found (404)": (["--repo", f"{gh.owner}/nope", "--tag", TAG, str(wheeldir)], env),
        "not OWNER/NAME": (["--repo", "nope", "--tag", TAG, str(wheeldir)], env),
    }
    for expected, (args, case_env) in cases.items():
        result = cli(args, case_env, tmp_path)
        assert_one_line_error(result.returncode, result.stderr)
        assert expected in result.stderr, (expected, result.stderr)
    assert gh.writes() == 0


def test_network_down_is_one_line_in_a_subprocess(wheeldir, tmp_path):
    # The real program with only its sleep replaced, so the bounded retries take no time.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from sagewheels import publish; "
            "publish.sleep = lambda s: None; sys.exit(publish.main(sys.argv[2:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(GITHUB_TOKEN="t", GITHUB_API_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts"), "--repo", "o/r", "--tag", TAG,
                             str(wheeldir)], env=env, check=False, capture_output=True, text=True,
                            timeout=60)
    assert_one_line_error(result.returncode, result.stderr)
    assert "connection refused" in result.stderr and "check the network" in result.stderr
    assert result.stdout.count("retry ") == publish.MAX_ATTEMPTS - 1
