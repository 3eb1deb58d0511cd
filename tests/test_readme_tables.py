"""benchmarks/readme_tables.py: the README's speed tables from a benchmark JSON. No GPU needed."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "readme_tables", Path(__file__).resolve().parents[1] / "benchmarks" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_tables)

DATA = {"rows": [
    {"D": 128, "causal": False, "N": 4096, "tops": {"fp16_cuda": 330.0, "original fp16_cuda": 388.0,
                                                    "fp8_cuda": None, "original fp8_cuda": 295.0}},
    {"D": 64, "causal": True, "N": 1024, "tops": {"fp16_cuda": 110.0, "original fp16_cuda": 60.0,
                                                  "fp8_cuda": 62.0, "original fp8_cuda": 0.0}},
]}


def test_a_missing_ratio_column_is_ours_over_the_originals():
    table = readme_tables.bench_table(DATA, ["fp16_cuda", "ratio fp16_cuda", "ratio fp8_cuda"])
    lines = table.splitlines()
    assert lines[2] == "| 128 full 4096 | 330 | 0.85 | - |"  # no figure of ours: no ratio
    assert lines[3] == "| 64 causal 1024 | 110 | 1.83 | - |"  # no figure of the original's


def test_a_ratio_in_the_json_is_kept():
    data = {"rows": [{**DATA["rows"][0], "tops": {**DATA["rows"][0]["tops"], "ratio fp16_cuda": 2.0}}]}
    assert readme_tables.bench_table(data, ["ratio fp16_cuda"]).splitlines()[2] == "| 128 full 4096 | 2.00 |"


def test_an_unknown_column_names_itself():
    with pytest.raises(SystemExit, match="ratio sdpa"):
        readme_tables.bench_table(DATA, ["ratio sdpa"])
