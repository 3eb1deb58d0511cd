"""The GitHub workflows: they validate against the workflow schema, pass zizmor (offline) without a
finding of medium severity or above, keep the hardening rules below even where zizmor is not
installed, and the wheels workflow reads only fields that `scripts/matrix.py expand --format
github` provides.

Hardening rules (described in docs/maintainers.md, the CI paragraph of "Build locally"):
- no `${{ ... }}` inside a `run:` script: values reach the shell through `env:` and a quoted "$VAR";
- every `uses:` pinned to a full 40-hex commit SHA, with its version in a comment
  (`uses: actions/checkout@<sha> # v6.1.0`); local `./` actions excepted;
- `persist-credentials: false` on every actions/checkout step;
- top-level `permissions: {}` (or contents: read), and every job names its own permissions, with
  write scopes only where WRITE_SCOPES allows them.

External programs (zizmor, check-jsonschema) are found through scripts/tools.py, so the copy of
the running environment is used. Both are test dependencies: missing, they fail the test under
CI=true and skip it elsewhere.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml")) + sorted(WORKFLOW_DIR.glob("*.yaml"))

sys.path.insert(0, str(ROOT / "scripts"))
from sagewheels import tools

# (workflow file name, job id) -> the permission scopes that job may hold with `write`.
# Empty today: every job only reads the repository (artifacts go up with the runner's token).
WRITE_SCOPES: dict = {}

SHA_PIN = re.compile(r"^[^@\s]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v?\d+(\.\d+)*\S*\s*$")
SEVERITIES = ("unknown", "informational", "low", "medium", "high")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _tool(name: str, provider: str) -> str:
    """Path of program `name` (scripts/tools.py order); missing: fail under CI, else skip."""
    path = tools.find(name)
    if path is None:
        message = f"{name} not found: it comes from {tools.PROVIDERS.get(name, provider)}"
        if _in_ci():
            pytest.fail(message + " (a declared test dependency: required under CI=true)")
        pytest.skip(message)
    return path


def _load(path: Path):
    return YAML(typ="safe", pure=True).load(path.read_text())


def _steps(workflow: dict):
    """(job id, step index, step) for every step of every job."""
    for job_id, job in (workflow.get("jobs") or {}).items():
        for i, step in enumerate((job or {}).get("steps") or []):
            yield job_id, i, step


def hardening_violations(name: str, workflow: dict, text: str) -> list:
    """Every break of the hardening rules (module docstring) in one workflow, one line each."""
    found = []
    for job_id, i, step in _steps(workflow):
        where = f"{name}: jobs.{job_id}.steps[{i}]"
        script = step.get("run")
        if isinstance(script, str) and "${{" in script:
            found.append(f"{where}: expression inside run: (pass it through env: and \"$VAR\")")
        uses = step.get("uses")
        if isinstance(uses, str):
            found += _uses_violations(where, uses)
            if uses.split("@")[0].lower() == "actions/checkout":
                with_ = step.get("with") or {}
                if str(with_.get("persist-credentials", "")).lower() != "false":
                    found.append(f"{where}: actions/checkout without persist-credentials: false")
    for job_id, job in (workflow.get("jobs") or {}).items():
        if isinstance((job or {}).get("uses"), str):  # a reusable workflow call
            found += _uses_violations(f"{name}: jobs.{job_id}", job["uses"])
    for lineno, line in enumerate(text.splitlines(), 1):
        match = USES_LINE.match(line)
        if match and not match["ref"].startswith("./") and not VERSION_COMMENT.match(match["rest"]):
            found.append(f"{name}:{lineno}: uses: without a version comment after the SHA (# vX.Y.Z)")
    found += _permission_violations(name, workflow)
    return found


def _uses_violations(where: str, uses: str) -> list:
    if uses.startswith("./"):
        return []
    if uses.startswith("docker://"):
        return [] if "@sha256:" in uses else [f"{where}: docker image {uses} not pinned by digest"]
    return [] if SHA_PIN.match(uses) else [f"{where}: {uses} not pinned to a 40-hex commit SHA"]


def _permission_violations(name: str, workflow: dict) -> list:
    found = []
    top = workflow.get("permissions", "missing")
    if top not in ({}, {"contents": "read"}):
        found.append(f"{name}: top-level permissions must be {{}} or contents: read, not {top!r}")
    for job_id, job in (workflow.get("jobs") or {}).items():
        perms = (job or {}).get("permissions")
        if not isinstance(perms, dict):
            found.append(f"{name}: jobs.{job_id} must name its permissions as a mapping, not {perms!r}")
            continue
        allowed = WRITE_SCOPES.get((name, job_id), set())
        for scope, level in perms.items():
            if level == "write" and scope not in allowed:
                found.append(f"{name}: jobs.{job_id} has {scope}: write, which it is not allowed")
    return found


def medium_or_above(findings) -> list:
    """The zizmor JSON findings (format v1) of medium or high severity that are not ignored."""
    kept = []
    for finding in findings:
        severity = str(finding.get("determinations", {}).get("severity", "unknown")).lower()
        if finding.get("ignored"):
            continue
        if severity not in SEVERITIES or SEVERITIES.index(severity) >= SEVERITIES.index("medium"):
            kept.append(finding)
    return kept


def run_zizmor(*inputs) -> list:
    """zizmor's findings on `inputs` as parsed JSON; fails the test if zizmor itself failed.

    The exit status encodes the highest severity found (10 + level), so it says nothing about
    success by itself: 0 and 10-19 mean zizmor ran, anything else is a tool failure. Tokens are
    kept from it: --offline makes it audit the files only."""
    zizmor = _tool("zizmor", "the PyPI package zizmor (in the [test] extra)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    proc = subprocess.run([zizmor, "--offline", "--format", "json", "--no-progress", "--color", "never",
                           *map(str, inputs)], capture_output=True, text=True, env=env, cwd=ROOT,
                          check=False, timeout=300)
    assert proc.returncode == 0 or 10 <= proc.returncode < 20, (proc.returncode, proc.stderr)
    findings = json.loads(proc.stdout)
    assert isinstance(findings, list), proc.stdout[:500]
    return findings


def _describe(findings) -> str:
    lines = []
    for f in findings:
        loc = (f.get("locations") or [{}])[0].get("symbolic", {})
        path = loc.get("key", {}).get("Local", {}).get("verbatim_path", "?")
        route = ".".join(str(next(iter(part.values()))) for part in loc.get("route", {}).get("route", []))
        lines.append(f"{f.get('ident')} ({f.get('determinations', {}).get('severity')}) "
                     f"{path} {route}: {f.get('desc')}")
    return "\n".join(lines)


def test_workflows_exist_and_load():
    assert {p.name for p in WORKFLOWS} >= {"tests.yml", "wheels.yml"}
    for path in WORKFLOWS:
        workflow = _load(path)
        assert isinstance(workflow, dict) and workflow.get("jobs"), path


def test_workflows_match_the_schema():
    checker = _tool("check-jsonschema", "the PyPI package check-jsonschema (in the [test] extra)")
    proc = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout


def test_workflows_keep_the_hardening_rules():
    found = []
    for path in WORKFLOWS:
        found += hardening_violations(path.name, _load(path), path.read_text())
    assert not found, "\n".join(found)


BAD_WORKFLOW = """\
on: push
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@0123456789abcdef0123456789abcdef01234567
      - uses: ./local-action
      - run: echo "${{ github.event.head_commit.message }}"
"""


def test_hardening_rules_catch_each_break(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(BAD_WORKFLOW)
    found = "\n".join(hardening_violations("bad.yml", _load(path), BAD_WORKFLOW))
    assert "steps[3]: expression inside run:" in found
    assert "steps[0]: actions/checkout@v4 not pinned" in found
    assert "steps[0]: actions/checkout without persist-credentials: false" in found
    assert "bad.yml:8: uses: without a version comment" in found
    assert "local-action" not in found
    assert "top-level permissions" in found and "jobs.build must name its permissions" in found


def test_severity_filter():
    def finding(severity, ignored=False):
        return {"ident": severity, "ignored": ignored, "determinations": {"severity": severity}}
    kept = medium_or_above([finding("Informational"), finding("Low"), finding("Medium"),
                            finding("High"), finding("High", ignored=True), finding("Critical")])
    assert [f["ident"] for f in kept] == ["Medium", "High", "Critical"]


def test_zizmor_reports_the_bad_workflow(tmp_path):
    """The invocation really audits: on a workflow that breaks the rules it reports them."""
    path = tmp_path / "bad.yml"
    path.write_text(BAD_WORKFLOW)
    rules = {f["ident"] for f in medium_or_above(run_zizmor(path))}
    assert {"unpinned-uses", "template-injection"} <= rules, rules


def test_zizmor_finds_nothing_medium_or_above():
    findings = medium_or_above(run_zizmor(WORKFLOW_DIR))
    assert not findings, _describe(findings)


def test_wheels_workflow_uses_only_expanded_fields():
    text = (WORKFLOW_DIR / "wheels.yml").read_text()
    # Expressions: ${{ ... }} anywhere, and the bare expressions of `if:` keys.
    expressions = re.findall(r"\$\{\{(.*?)\}\}", text) + re.findall(r"^\s*if:\s*(.+)$", text, re.MULTILINE)
    used = set(re.findall(r"\bmatrix\.(\w+)", " ".join(expressions)))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), "expand",
                          "--format", "github"], stdout=subprocess.PIPE, text=True, check=True)
    for entry in json.loads(out.stdout)["include"]:
        assert used <= set(entry), used - set(entry)
    assert {"id", "runner", "toolkit", "torch", "cuda"} <= used
