"""The GitHub workflows: they validate against the workflow schema, pass zizmor (offline) without a
finding of medium severity or above, keep the hardening rules below even where zizmor is not
installed, every job matrix a workflow reads comes from `scripts/matrix.py` and has the fields the
jobs read, and the release workflow is wired plan -> build -> validate -> attest -> publish ->
deploy (each stage needing the one before it, every job with a time limit).

Hardening rules (described in docs/maintainers.md, the CI paragraph of "Build locally"):
- no `${{ ... }}` inside a `run:` script: values reach the shell through `env:` and a quoted "$VAR";
- every `uses:` pinned to a full 40-hex commit SHA, with its version in a comment
  (`uses: actions/checkout@<sha> # v6.1.0`); local `./` actions excepted; container and service
  images pinned by digest (`@sha256:`);
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

# (workflow file name, job id) -> the permission scopes that job may hold with `write`. Every
# other job only reads the repository (artifacts go up and down with the runner's own token).
WRITE_SCOPES: dict = {
    # Provenance attestations: Sigstore issues the signing certificate for the job's OIDC token
    # (id-token), and the signed attestations are stored with the repository (attestations).
    ("release.yml", "attest"): {"id-token", "attestations"},
    # scripts/publish.py creates the release and uploads its assets: repository contents.
    ("release.yml", "publish"): {"contents"},
    # actions/deploy-pages deploys the index site (pages) and proves the run's identity to
    # GitHub Pages with an OIDC token (id-token).
    ("release.yml", "deploy"): {"pages", "id-token"},
}

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
        found += _image_violations(f"{name}: jobs.{job_id}", job or {})
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


def _image_violations(where: str, job: dict) -> list:
    """A container or service image named by a tag can change under the job: pin it by digest."""
    images = [("container", job.get("container"))]
    images += [(f"services.{k}", v) for k, v in (job.get("services") or {}).items()]
    found = []
    for what, spec in images:
        image = spec.get("image") if isinstance(spec, dict) else spec
        if isinstance(image, str) and "@sha256:" not in image:
            found.append(f"{where}.{what}: image {image} not pinned by digest (@sha256:...)")
    return found


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
    assert {p.name for p in WORKFLOWS} >= {"tests.yml", "wheels.yml", "release.yml"}
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


# ---------------------------------------------------------------------------------------------
# Wiring: job matrices come from scripts/matrix.py, and the jobs read only fields it provides

MATRIX_CALL = re.compile(r"(?P<var>\w+)=\$\(python scripts/matrix\.py (?P<args>[^)]*)\)")
STEP_OUTPUT = re.compile(r"^\$\{\{\s*steps\.(?P<step>[\w-]+)\.outputs\.(?P<name>[\w-]+)\s*\}\}$")
FROM_PLAN = re.compile(r"^\$\{\{\s*fromJSON\(needs\.plan\.outputs\.(?P<name>\w+)\)\s*\}\}$")


def _job_texts(text: str) -> dict:
    """Job id -> the lines of the workflow file that define it (the jobs sit two spaces in)."""
    body = text[text.index("\njobs:\n"):]
    heads = list(re.finditer(r"^  (?P<id>[\w-]+):\s*$", body, re.MULTILINE))
    return {m["id"]: body[m.start():heads[i + 1].start() if i + 1 < len(heads) else len(body)]
            for i, m in enumerate(heads)}


def _used_matrix_fields(job_text: str) -> set:
    """matrix.X read anywhere in the job: inside ${{ ... }} and in bare `if:` expressions."""
    expressions = re.findall(r"\$\{\{(.*?)\}\}", job_text) + re.findall(r"^\s*(?:- )?if:\s*(.+)$", job_text,
                                                                       re.MULTILINE)
    return set(re.findall(r"\bmatrix\.(\w+)", " ".join(expressions)))


def plan_commands(workflow: dict) -> dict:
    """Plan output name -> the scripts/matrix.py arguments that produce it: the plan job's output
    names a step output, and that step assigns it from a matrix.py call and writes it to
    $GITHUB_OUTPUT."""
    plan = workflow["jobs"]["plan"]
    steps = {step.get("id"): step for step in plan["steps"] if step.get("id")}
    commands = {}
    for name, value in (plan.get("outputs") or {}).items():
        m = STEP_OUTPUT.match(str(value).strip())
        assert m, f"plan output {name} is not a step output: {value}"
        script = steps[m["step"]]["run"]
        calls = {c["var"]: c["args"] for c in MATRIX_CALL.finditer(script)}
        if m["name"] in calls:
            assert f'"{m["name"]}=' in script and "GITHUB_OUTPUT" in script, script
            commands[name] = calls[m["name"]].split()
    return commands


def _run_matrix(args: list) -> object:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", ["wheels.yml", "release.yml"])
def test_job_matrices_come_from_matrix_py_with_the_fields_the_jobs_read(name):
    text = (WORKFLOW_DIR / name).read_text()
    workflow = _load(WORKFLOW_DIR / name)
    commands = plan_commands(workflow)
    jobs = _job_texts(text)
    matrix_jobs = 0
    for job_id, job in workflow["jobs"].items():
        spec = (job.get("strategy") or {}).get("matrix")
        if spec is None:
            assert not _used_matrix_fields(jobs[job_id]), f"{job_id} reads matrix fields without a matrix"
            continue
        m = FROM_PLAN.match(str(spec).strip())
        assert m, f"{name}: jobs.{job_id}: the matrix must be fromJSON(needs.plan.outputs.X), not {spec}"
        args = commands.get(m["name"])
        assert args and args[0] == "expand" and args[-2:] == ["--format", "github"], (job_id, args)
        assert "plan" in _needs(job), f"{job_id} reads the plan's output without needing plan"
        entries = _run_matrix(args)["include"]
        assert entries, (job_id, args)
        used = _used_matrix_fields(jobs[job_id])
        for entry in entries:
            assert used <= set(entry), (job_id, used - set(entry))
        matrix_jobs += 1
    assert matrix_jobs >= 2


def test_wheels_workflow_reads_the_row_fields():
    jobs = _job_texts((WORKFLOW_DIR / "wheels.yml").read_text())
    used = _used_matrix_fields(jobs["windows"]) | _used_matrix_fields(jobs["linux"])
    assert {"id", "runner", "toolkit", "torch", "cuda"} <= used


# ---------------------------------------------------------------------------------------------
# The release workflow

RELEASE = WORKFLOW_DIR / "release.yml"


def _needs(job: dict) -> set:
    needs = job.get("needs") or []
    return {needs} if isinstance(needs, str) else set(needs)


def _scripts(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) for step in job.get("steps") or [])


def _uses(job: dict) -> list:
    return [str(step["uses"]).split("@")[0] for step in job.get("steps") or [] if "uses" in step]


@pytest.fixture(scope="module")
def release():
    return _load(RELEASE)


def test_release_runs_on_tags_one_run_per_tag_never_cancelled(release):
    # ruamel's safe loader reads the key `on` as the boolean True (YAML 1.1).
    triggers = release.get("on", release.get(True))
    assert triggers["push"]["tags"] == ["v*"] and "pull_request" not in triggers
    assert "github.ref" in release["concurrency"]["group"]
    assert release["concurrency"]["cancel-in-progress"] is False


def test_release_stages_need_the_stage_before(release):
    jobs = release["jobs"]
    assert set(jobs) == {"plan", "build-windows", "build-linux", "validate", "attest", "publish", "deploy"}
    assert _needs(jobs["build-windows"]) == _needs(jobs["build-linux"]) == {"plan"}
    assert _needs(jobs["validate"]) >= {"plan", "build-windows", "build-linux"}
    assert "validate" in _needs(jobs["attest"])
    # publish: only when every validation job (the whole matrix) and every build passed.
    assert _needs(jobs["publish"]) >= {"validate", "attest", "build-windows", "build-linux"}
    assert "if" not in jobs["publish"], "publish must keep the default: every needed job succeeded"
    assert "publish" in _needs(jobs["deploy"])


def test_release_plan_checks_and_expands_the_matrix(release):
    plan = _scripts(release["jobs"]["plan"])
    assert "python scripts/matrix.py check" in plan
    commands = plan_commands(release)
    assert commands["windows"][:3] == ["expand", "--platform", "windows"]
    assert commands["linux"][:3] == ["expand", "--platform", "linux"]
    assert "--released" in commands["windows"] and "--released" in commands["linux"]
    assert commands["validations"][:2] == ["expand", "--validations"]
    assert "matrix.py inputs --released released --reused" in plan
    for job_id, output in (("build-windows", "windows"), ("build-linux", "linux"),
                           ("validate", "validations")):
        assert output in str(release["jobs"][job_id]["strategy"]["matrix"])


def test_release_jobs_have_time_limits_well_under_six_hours(release):
    # GitHub stops a job at 6 h; a hung step should fail long before (docs/releasing.md: the
    # expected time per row). Elsewhere a limit, where set, is under 6 h too.
    for job_id, job in release["jobs"].items():
        limit = job.get("timeout-minutes")
        assert isinstance(limit, int) and 0 < limit <= 120, (job_id, limit)
    for path in WORKFLOWS:
        for job_id, job in _load(path)["jobs"].items():
            assert job.get("timeout-minutes", 1) < 360, (path.name, job_id)


def test_release_builds_linux_wheels_in_a_pinned_manylinux_2_28_image(release):
    image = release["jobs"]["build-linux"]["container"]["image"]
    assert image.startswith("quay.io/pypa/manylinux_2_28_x86_64")
    assert re.search(r"@sha256:[0-9a-f]{64}$", image)
    rows = [e for e in _run_matrix(["expand", "--format", "json"]) if e["platform"] == "linux"]
    names = [w for e in rows for w in e["wheels"]]
    # A wheel built on glibc 2.28 can claim 2_28 or any newer policy; most rows claim 2_28.
    policies = [int(re.search(r"manylinux_2_([0-9]+)_x86_64", w).group(1)) for w in names]
    assert all(p >= 28 for p in policies) and policies.count(28) >= 4, names
    windows = release["jobs"]["build-windows"]
    assert "Jimver/cuda-toolkit" in _uses(windows) and "ilammy/msvc-dev-cmd" in _uses(windows)


def test_release_validates_on_the_rows_gpu_runners(release):
    validate = release["jobs"]["validate"]
    assert validate["runs-on"] == "${{ matrix.gpu_labels }}"
    assert validate["strategy"]["fail-fast"] is False
    script = _scripts(validate)
    assert 'scripts/validate_wheel.py "wheelhouse/$WHEEL" --row "$ROW_ID" --out report.json' in script
    assert "python -m venv" in script and "https://download.pytorch.org/whl/$ROW_CUDA" in script
    assert '"$ROW_TRITON"' in script
    reports = [s for s in validate["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert reports and reports[0]["with"]["path"] == "report.json" and reports[0]["if"] == "always()"
    entries = _run_matrix(["expand", "--validations", "--format", "json"])
    assert all(e["gpu_labels"][0] == "self-hosted" and e["gpu_family"] in e["gpu_labels"]
               for e in entries)
    # Every row is validated somewhere: nothing is published unvalidated.
    assert {e["id"] for e in entries} == {e["id"] for e in _run_matrix(["expand", "--format", "json"])}


def test_release_attests_publishes_and_deploys(release):
    jobs = release["jobs"]
    assert "actions/attest-build-provenance" in _uses(jobs["attest"])
    assert jobs["attest"]["steps"][-1]["with"]["subject-path"] == "wheelhouse/*.whl"
    publish = _scripts(jobs["publish"])
    # shared/MANIFEST.md's command lines, with the release's download address.
    url = r'"\$GITHUB_SERVER_URL/\$GITHUB_REPOSITORY/releases/download/\$GITHUB_REF_NAME/"'
    assert re.search(r"python scripts/make_index\.py wheelhouse \\\s+--download-url " + url, publish)
    assert ('python scripts/publish.py --repo "$GITHUB_REPOSITORY" --tag "$GITHUB_REF_NAME" '
            "wheelhouse") in publish
    assert "cyclonedx-py requirements" in publish and "cyclonedx-bom==" in publish
    assert publish.index("make_index.py") < publish.index("cyclonedx-py") < publish.index("publish.py")
    deploy = jobs["deploy"]
    assert deploy["environment"]["name"] == "github-pages"
    assert {"actions/upload-pages-artifact", "actions/deploy-pages"} <= set(_uses(deploy))
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_write_scopes_are_only_where_needed(release):
    """Each allowed write scope is used (the allow-list does not rot), and no other job writes."""
    for (name, job_id), scopes in WRITE_SCOPES.items():
        perms = _load(WORKFLOW_DIR / name)["jobs"][job_id]["permissions"]
        assert {k for k, v in perms.items() if v == "write"} == scopes, (name, job_id, perms)
    writers = {job_id for job_id, job in release["jobs"].items()
               if "write" in job["permissions"].values()}
    assert writers == {"attest", "publish", "deploy"}


def test_unpinned_container_images_are_caught():
    job = {"permissions": {}, "container": {"image": "ubuntu:24.04"}, "steps": [],
           "services": {"db": {"image": "postgres@sha256:" + "0" * 64}}}
    workflow = {"permissions": {}, "jobs": {"b": job}}
    found = hardening_violations("bad.yml", workflow, "")
    assert found == ["bad.yml: jobs.b.container: image ubuntu:24.04 not pinned by digest (@sha256:...)"]
