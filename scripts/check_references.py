#!/usr/bin/env python3
"""Regenerates the committed reference values into a temporary directory and compares them with
the committed files, so the numbers the Rust tests check cannot silently drift from their
generators (scripts/reference/*.py). Numbers must agree to 1e-9 relative (or 1e-12 absolute):
the generators are deterministic with the pinned scipy/astropy (scripts/requirements.txt), and
this tolerance only absorbs last-bit differences between CPUs.

Usage: $(./scripts/pyenv.sh) scripts/check_references.py
"""

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("scripts/reference/model_reference.py", "operators/tests/data/model_reference.json"),
    ("scripts/reference/rhythm_reference.py", "operators/tests/data/rhythm_reference.json"),
    ("scripts/reference/fleet_reference.py", "operators/tests/data/fleet_reference.json"),
    ("scripts/reference/wavelet_reference.py", "operators/tests/data/wavelet_reference.json"),
    ("scripts/reference/cosinor_reference.py", "operators/tests/data/cosinor_reference.json"),
    ("scripts/reference/trend_reference.py", "operators/tests/data/trend_reference.json"),
]
# Fields that describe the run rather than the result.
IGNORED = {"python", "elapsed_seconds", "generated_at", "runtime_seconds"}


def compare(a, b, path, problems):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED:
                continue
            if k not in a or k not in b:
                problems.append(f"{path}.{k}: present in only one file")
                continue
            compare(a[k], b[k], f"{path}.{k}", problems)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{path}: length {len(a)} vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{path}[{i}]", problems)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{path}: committed {a!r}, regenerated {b!r}")
    elif a != b:
        problems.append(f"{path}: committed {a!r}, regenerated {b!r}")


def main():
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for script, committed in PAIRS:
            out = Path(tmp) / Path(committed).name
            subprocess.run([sys.executable, str(ROOT / script), "--out", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            problems = []
            compare(json.loads((ROOT / committed).read_text()), json.loads(out.read_text()),
                    "$", problems)
            if problems:
                failed = True
                print(f"{committed} differs from what {script} produces now:")
                for p in problems[:20]:
                    print("  " + p)
            else:
                print(f"{committed}: reproduced")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
