"""Render the newest benchmark and accuracy JSON (benchmarks/results/) into README.md.

The tables live between the markers <!-- bench:start/end --> and <!-- accuracy:start/end -->.
Usage: python benchmarks/readme_tables.py [--gpu "NVIDIA H100 80GB HBM3"] [--bench-only --marker NAME]

--bench-only --marker bench-h200 --gpu "NVIDIA H200" renders only the speed table of that GPU
between <!-- bench-h200:start/end --> (a GPU whose accuracy table is not in the README).
--file PATH renders that JSON instead of the newest one, --columns NAME ... only those columns
(in that order), e.g. the side-by-side table of the mma.sync kernels:
  --bench-only --marker bench-mma-h200 --file benchmarks/results/bench-mma-sync-ab-NVIDIA_H200-2026-12-01.json
  --columns "v3 fp16_cuda" "original fp16_cuda" "ratio fp16_cuda" ...
A "ratio X" column the JSON lacks is computed as X / "original X" of the same row.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def newest(prefix: str, gpu: str) -> dict:
    files = sorted(RESULTS.glob(f"{prefix}-{gpu.replace(' ', '_')}-*.json"))
    if not files:
        raise SystemExit(f"no {prefix} results for {gpu!r} in {RESULTS}")
    return json.loads(files[-1].read_text())


def with_ratios(rows: list, names) -> list:
    """Rows whose ``tops`` also hold each requested "ratio X" the JSON lacks: X / "original X"."""
    out = []
    for r in rows:
        tops = dict(r["tops"])
        for n in names:
            base = n[len("ratio "):]
            if n.startswith("ratio ") and n not in tops and base in tops and f"original {base}" in tops:
                ours, orig = tops[base], tops[f"original {base}"]
                tops[n] = None if ours is None or not orig else ours / orig
        out.append({**r, "tops": tops})
    return out


def bench_table(data: dict, columns=None) -> str:
    names = list(columns or data["rows"][0]["tops"])
    rows = with_ratios(data["rows"], names)
    missing = [n for n in names if n not in rows[0]["tops"]]
    if missing:
        raise SystemExit(f"--columns: {missing} not in the JSON; it has {list(data['rows'][0]['tops'])}")
    lines = ["| D, mask, N | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        cells = ["-" if r["tops"][n] is None else
                 (f"{r['tops'][n]:.2f}" if n.startswith("ratio") else f"{r['tops'][n]:.0f}")
                 for n in names]
        lines.append(f"| {r['D']} {'causal' if r['causal'] else 'full'} {r['N']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(data: dict, d: int = 128) -> str:
    rows = [r for r in data["rows"] if r["D"] == d and not r["causal"]]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fns = list(dict.fromkeys(r["function"] for r in rows))
    cell = {(r["function"], r["kind"]): r for r in rows}
    lines = ["| function | " + " | ".join(f"{k}: cosine / rel. L1" for k in kinds) + " |",
             "|---" * (len(kinds) + 1) + "|"]
    for f in fns:
        lines.append(f"| {f} | " + " | ".join(
            f"{cell[f, k]['cosine']:.5f} / {cell[f, k]['rel_l1']:.4f}" for k in kinds) + " |")
    return "\n".join(lines)


def splice(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="NVIDIA H100 80GB HBM3")
    ap.add_argument("--marker", default="bench", help="the README markers of the speed table")
    ap.add_argument("--bench-only", action="store_true", help="leave the accuracy table alone")
    ap.add_argument("--file", type=Path, help="this benchmark JSON instead of the newest")
    ap.add_argument("--columns", nargs="+", metavar="NAME", help="only these columns, in order")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    if args.file:
        try:
            data = json.loads(args.file.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--file {args.file}: cannot read a benchmark JSON ({exc})") from None
    else:
        data = newest("bench", args.gpu)
    text = splice(text, args.marker, bench_table(data, args.columns))
    if not args.bench_only:
        text = splice(text, "accuracy", accuracy_table(newest("accuracy", args.gpu)))
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
