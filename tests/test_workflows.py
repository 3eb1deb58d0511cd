"""The GitHub workflows validate against the workflow schema (offline), and the wheels workflow
reads only fields that `scripts/matrix.py expand --format github` provides."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="needs check-jsonschema")
def test_workflows_match_the_schema():
    proc = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_wheels_workflow_uses_only_expanded_fields():
    text = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    # Expressions: ${{ ... }} anywhere, and the bare expressions of `if:` keys.
    expressions = re.findall(r"\$\{\{(.*?)\}\}", text) + re.findall(r"^\s*if:\s*(.+)$", text, re.MULTILINE)
    used = set(re.findall(r"\bmatrix\.(\w+)", " ".join(expressions)))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), "expand",
                          "--format", "github"], stdout=subprocess.PIPE, text=True, check=True)
    for entry in json.loads(out.stdout)["include"]:
        assert used <= set(entry), used - set(entry)
    assert {"id", "runner", "toolkit", "torch", "cuda"} <= used
