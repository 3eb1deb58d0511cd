"""Reproducible wheels: the host row built twice from one commit, in the same folder, gives
byte-identical wheels (before and after auditwheel). SOURCE_DATE_EPOCH comes from the commit
(scripts/sagewheels/build.py), setup.py strips the symbol table (nvcc's temporary file names)
and maps source paths; a second folder name would change nvcc's internal symbol names, which
are derived from the absolute path.

One arch, about 80 s on 2 cores; skipped without nvcc or a CUDA build of torch, or with
SAGEATTENTION_SKIP_BUILD_TEST=1.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from build_env import NEEDS_BUILD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import build

pytestmark = NEEDS_BUILD


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.whl"))}


def test_same_row_twice_gives_identical_wheels(tmp_path):
    src = tmp_path / "repo"
    build.stage_sources(src)
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t", "commit",
                    "-qm", "snapshot", "--date", "2026-01-02T03:04:05Z"], check=True,
                   env={**os.environ, "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"})
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["MAX_JOBS"] = env.get("MAX_JOBS", "2")
    out = src / "wheelhouse"
    results = []
    for attempt in ("first", "second"):
        proc = subprocess.run([sys.executable, "scripts/build_wheel.py", "--host", "--archs", "8.0",
                               "--out", str(out)], cwd=src, env=env, capture_output=True,
                              text=True, timeout=1800, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "SOURCE_DATE_EPOCH=1767323045" in proc.stdout  # the commit's time
        results.append(_digests(out))
        shutil.move(str(out), str(tmp_path / attempt))
    assert len(results[0]) == 2, results[0]  # the unrepaired and the repaired wheel
    assert results[0] == results[1]
    # The staged copy has no .git: the commit reaches _build_info through the plan.
    sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    wheel = next((tmp_path / "first").glob("sageattention-*manylinux*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        info = zf.read("sageattention/_build_info.py").decode()
    assert re.search(rf"^GIT_SHA = '{sha}'$", info, re.MULTILINE), info
