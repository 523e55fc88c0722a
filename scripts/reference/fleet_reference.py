#!/usr/bin/env python3
"""Reference values for the fleet's phase synchrony, computed with SciPy's circular statistics,
for the Rust tests (operators/tests/fleet_synchrony.rs).

For sets of node phases (fractions of a cycle) it writes, from `scipy.stats.circmean`,
`circvar` and `circstd` on the angles 2*pi*phase:

* `order_parameter`   the Kuramoto order parameter R = |mean of exp(2*pi*i*phase)| = 1 - circvar
* `mean_phase`        the circular mean phase, in [0, 1)
* `spread_ct_hours`   the circular standard deviation sqrt(-2 ln R), as circadian hours (x 24/2pi)

The sets: a fleet in phase, uniformly spread phases, two opposite clusters, and seeded random
fleets of a few sizes (von Mises around a mean, and uniform).

Usage: $(./scripts/pyenv.sh) scripts/reference/fleet_reference.py [--out PATH]
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import scipy
from scipy import stats


def summary(phases):
    a = 2 * math.pi * np.asarray(phases, float)
    r = 1.0 - float(stats.circvar(a))
    return {
        "phases": [float(p) for p in phases],
        "order_parameter": r,
        "mean_phase": float(stats.circmean(a)) / (2 * math.pi) % 1.0,
        "spread_ct_hours": float(stats.circstd(a)) * 24.0 / (2 * math.pi),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parents[2]
    ap.add_argument("--out", default=str(root / "operators/tests/data/fleet_reference.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(20261206)
    sets = {
        "in_phase": [0.3] * 10,
        "two_clusters": [0.1] * 6 + [0.6] * 4,
        "across_midnight": [0.95, 0.97, 0.99, 0.01, 0.03, 0.05],
    }
    for n in (5, 50, 500):
        sets[f"von_mises_{n}"] = list((rng.vonmises(1.0, 4.0, n) / (2 * math.pi)) % 1.0)
        sets[f"uniform_{n}"] = list(rng.uniform(0.0, 1.0, n))
    doc = {
        "source": {
            "generator": "scripts/reference/fleet_reference.py",
            "method": "scipy.stats.circmean, circvar, circstd on 2*pi*phase",
            "scipy": scipy.__version__,
            "numpy": np.__version__,
        },
        "sets": {k: summary(v) for k, v in sets.items()},
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
