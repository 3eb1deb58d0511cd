"""The wheel matching rule (shared/MANIFEST.md) for the index site and the matrix checks.

The rule has one implementation: the stand-alone installer, sageattention/_installer.py
(published as install_sageattention.py; the doctor uses it too). This module loads that file by
path, so the tools need neither torch nor the package's __init__, and re-exports its matching
functions. site_page.html carries the same rule in JavaScript; tests/matching_cases.json drives
both.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

INSTALLER = Path(__file__).resolve().parents[2] / "sageattention" / "_installer.py"


def _load():
    name = "sageattention_installer_rule"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, INSTALLER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclass-free, but keep it importable by name while it runs
    spec.loader.exec_module(module)
    return module


_rule = _load()

FIELDS, WEIGHTS, NEAREST, PLATFORMS, ONE_LINER = (_rule.FIELDS, _rule.WEIGHTS, _rule.NEAREST,
                                                  _rule.PLATFORMS, _rule.ONE_LINER)
version_key, compare_keys, split_torch, cp_tuple = (_rule.version_key, _rule.compare_keys,
                                                    _rule.split_torch, _rule.cp_tuple)
arch_covers, gpu_covered, wheel_problems, explain = (_rule.arch_covers, _rule.gpu_covered,
                                                     _rule.wheel_problems, _rule.explain)
parse_machine_line, preference, score = _rule.parse_machine_line, _rule.preference, _rule.score
