"""Golden data of a redesign: what must not change, read from one run of the commands in
`scripts/golden.sh` (the parity matrix with int8, SINet's folder, the VOS export, verify and bench).

    python scripts/golden.py digest RUN_FOLDER > digest.json     # pin (before the change)
    python scripts/golden.py compare BEFORE.json RUN_FOLDER      # check (after): exit 1 on any difference

Metrics must agree within 1e-9 (relative); files byte for byte (sha256). Latencies are not golden: the
VOS bench keeps its decisions and reuse ratios, which are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

SKIPPED_FILES = ("manifest.json",)  # holds paths, versions and the source fingerprint


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in SKIPPED_FILES and not p.name.startswith(".")
    }  # fmt: skip


def _numbers(value):
    """Every number (and string) of a JSON value, keyed by its path; timings and paths left out."""
    out = {}

    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                if any(word in k for word in ("seconds", "_ms", "ms_", "latency", "fps", "time", "path", "file", "artifact",
                                               "version", "created", "host", "wall")):  # fmt: skip
                    continue
                walk(x, f"{path}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[path] = v

    walk(value, "")
    return out


def digest(run: Path) -> dict:
    matrix = json.loads((run / "parity.json").read_text())
    rows = {f"{r['model']} {r['target']} {r['precision']} {r['runtime']}": {k: r[k] for k in
            ("status", "max_rel", "cosine", "psnr_db", "argmax_agreement", "miou")} for r in matrix["rows"]}  # fmt: skip
    result = {"parity_rows": rows, "files": {}}
    for model in sorted(p.name for p in (run / "artifacts").iterdir() if p.is_dir() and not p.name.startswith(".")):
        result["files"].update({f"artifacts/{model}/{k}": v for k, v in _files(run / "artifacts" / model).items()})
    result["files"].update({f"sinet/{k}": v for k, v in _files(run / "sinet").items()})
    result["files"].update({f"vos/{k}": v for k, v in _files(run / "vos").items() if not k.startswith("parity")})
    verify = json.loads((run / "vos-verify.json").read_text())
    for entry in verify.get("subgraphs", []):  # "subgraph" before the redesign, "graph" after
        entry["graph"] = entry.pop("subgraph", entry.get("graph"))
        entry.get("tolerance", {}).pop("judged_on", None)
        entry.pop("failures", None)
    result["vos_verify"] = _numbers({"subgraphs": verify["subgraphs"], "sequences": verify["sequences"], "passed": verify["passed"]})
    bench = json.loads((run / "vos-bench.json").read_text())
    result["vos_bench"] = _numbers({"runs": [{"runtime": r["runtime"], "rows": [{k: row[k] for k in ("tau", "reuse_ratio")
                                    if k in row} for row in r["rows"]]} for r in bench["runs"]]})  # fmt: skip
    return result


def _same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        try:
            a, b = float(a), float(b)
        except ValueError:
            return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b) or a == b:
            return True
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return a == b


def compare(before: dict, after: dict) -> list[str]:
    problems = []
    for section in ("parity_rows", "files", "vos_verify", "vos_bench"):
        old, new = before[section], after[section]
        for key in sorted(set(old) | set(new)):
            if key not in new or key not in old:
                problems.append(f"{section}: {key} {'missing after' if key not in new else 'new after'}")
            elif section == "parity_rows":
                problems += [f"parity {key} {m}: {old[key][m]} -> {new[key][m]}" for m in old[key] if not _same(old[key][m], new[key][m])]
            elif not _same(old[key], new[key]):
                problems.append(f"{section}: {key}: {old[key]} -> {new[key]}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "digest":
        print(json.dumps(digest(Path(argv[1])), indent=1, sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        before = json.loads(Path(argv[1]).read_text())
        after = digest(Path(argv[2]))
        problems = compare(before, after)
        counts = {k: len(before[k]) for k in ("parity_rows", "files", "vos_verify", "vos_bench")}
        print(f"compared {counts}: {len(problems)} difference(s)")
        for problem in problems:
            print("  " + problem)
        return 1 if problems else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
