#!/usr/bin/env python3
"""Reference values for period-trend tests: OLS with Newey–West (HAC) errors and Mann–Kendall.

Writes operators/tests/data/trend_reference.json, which Rust tests read; the tests do not need
Python. Rerun after changing the cases (deterministic: every case has its own numpy seed):

    $(./scripts/pyenv.sh) scripts/reference/trend_reference.py

Generated with statsmodels 0.15, pymannkendall 1.4.3, numpy 2.4, scipy 1.17 (the versions used
are recorded in the JSON).

Each case is a node's fitted period per rhythm window: x = window time in days (0, 1, …, n−1),
y = 24 + drift·x + e, e an AR(1) series e_0 = σ/√(1−φ²)·z_0, e_i = φ e_{i−1} + σ z_i,
φ = 0.6, σ = 0.05 h, z standard normal from numpy's default_rng(seed).

HAC: statsmodels OLS(y, add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": L,
"kernel": "bartlett", "use_correction": False}) with L = floor(4·(n/100)^(2/9)) (Newey & West
1994 rule of thumb, computed in floating point; L = 3 for n = 60, 2 for n = 12). The covariance
is (X'X)⁻¹ S (X'X)⁻¹ with S = Σ_l w_l (Γ_l + Γ_l'), Γ_0 counted once, Γ_l = Σ_{i≥l} u_i u_{i−l}',
u_i = x_i e_i (x_i = (1, x_i), e_i the OLS residual), Bartlett weights w_l = 1 − l/(L+1),
l = 0…L; no small-sample factor (use_correction=False is also statsmodels' default for
"HAC"); the "hac_corrected" block multiplies the covariance by n/(n−k), k = 2. statsmodels
uses the NORMAL distribution for HAC p-values and intervals (use_t defaults to False for
robust covariances): p = 2·Φ(−|b/se|), CI = b ± Φ⁻¹(0.975)·se. The script recomputes the HAC
covariance from that formula and asserts equality to 1e-12. docs/notes/statsmodels_hac.md
has the details. Plain OLS ("ols") uses t(n−2) for p-values and intervals.

Mann–Kendall: pymannkendall.original_test(y) and hamed_rao_modification_test(y) (alpha 0.05,
lag=None, i.e. all n−1 lags of the ranks' ACF; only lags outside ±Φ⁻¹(0.975)/√n count). Both
use the sample index 0…n−1 as time, so Sen's slope is per window step (= per day here) and the
intercept is median(y) − median(0…n−1)·slope (Conover), i.e. the value at x = 0. Their p-values
are 2·(1 − Φ(|z|)) (loses precision below ~1e-16), z = (S − sgn S)/√var(S).
"""

import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import pymannkendall as mk
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "operators" / "tests" / "data" / "trend_reference.json"
PHI = 0.6
SIGMA = 0.05


def ar1_noise(rng, n):
    z = rng.standard_normal(n)
    e = np.empty(n)
    e[0] = SIGMA / math.sqrt(1 - PHI * PHI) * z[0]
    for i in range(1, n):
        e[i] = PHI * e[i - 1] + SIGMA * z[i]
    return e


def hac_by_hand(x, y, lags, correction):
    X = np.column_stack([np.ones_like(x), x])
    b = np.linalg.solve(X.T @ X, X.T @ y)
    u = X * (y - X @ b)[:, None]
    s = u.T @ u
    for lag in range(1, lags + 1):
        g = u[lag:].T @ u[:-lag]
        s += (1 - lag / (lags + 1)) * (g + g.T)
    bread = np.linalg.inv(X.T @ X)
    cov = bread @ s @ bread
    if correction:
        cov *= x.size / (x.size - 2)
    return cov


def regression(res):
    ci = res.conf_int(0.05)
    return {
        "intercept": float(res.params[0]),
        "slope": float(res.params[1]),
        "intercept_bse": float(res.bse[0]),
        "slope_bse": float(res.bse[1]),
        "slope_stat": float(res.tvalues[1]),
        "slope_pvalue": float(res.pvalues[1]),
        "intercept_pvalue": float(res.pvalues[0]),
        "slope_conf_int": [float(ci[1, 0]), float(ci[1, 1])],
        "intercept_conf_int": [float(ci[0, 0]), float(ci[0, 1])],
        "cov_params": res.cov_params().tolist(),
        "use_t": bool(res.use_t),
        "distribution": "t" if res.use_t else "normal",
        "df_resid": float(res.df_resid),
    }


def mk_dict(r):
    return {
        "trend": r.trend,
        "h": bool(r.h),
        "p": float(r.p),
        "z": float(r.z),
        "Tau": float(r.Tau),
        "s": float(r.s),
        "var_s": float(r.var_s),
        "slope": float(r.slope),
        "intercept": float(r.intercept),
    }


def make_case(name, seed, n, drift):
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    y = 24.0 + drift * x + ar1_noise(rng, n)
    lags = int(math.floor(4 * (n / 100) ** (2 / 9)))
    X = sm.add_constant(x)
    cov_kwds = {"maxlags": lags, "kernel": "bartlett", "use_correction": False}
    hac = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds=dict(cov_kwds))
    hac_c = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds=dict(cov_kwds, use_correction=True))
    ols = sm.OLS(y, X).fit()
    assert not hac.use_t and ols.use_t
    for res, corr in ((hac, False), (hac_c, True)):
        mine = hac_by_hand(x, y, lags, corr)
        assert np.allclose(res.cov_params(), mine, rtol=1e-12, atol=0)
        z = res.params[1] / math.sqrt(mine[1, 1])
        assert math.isclose(res.pvalues[1], 2 * stats.norm.sf(abs(z)), rel_tol=1e-9)
    return {
        "name": name,
        "seed": seed,
        "n": n,
        "drift_per_day": drift,
        "ar1_phi": PHI,
        "ar1_sigma": SIGMA,
        "x": x.tolist(),
        "y": y.tolist(),
        "hac_maxlags": lags,
        "hac_cov_kwds": cov_kwds,
        "hac": regression(hac),
        "hac_corrected": dict(regression(hac_c), correction_factor=n / (n - 2)),
        "ols": regression(ols),
        "mann_kendall": mk_dict(mk.original_test(y)),
        "hamed_rao": mk_dict(mk.hamed_rao_modification_test(y)),
    }


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    out = Path(ap.parse_args().out).resolve()
    cases = [
        make_case("flat_n60", 51, 60, 0.0),
        make_case("decreasing_n60", 52, 60, -0.01),
        make_case("increasing_n60", 53, 60, 0.004),
        make_case("short_decreasing_n12", 54, 12, -0.01),
    ]
    doc = {
        "generator": "scripts/reference/trend_reference.py",
        "statsmodels_version": statsmodels.__version__,
        "pymannkendall_version": importlib.metadata.version("pymannkendall"),
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "hac": "OLS(y, add_constant(x)).fit(cov_type='HAC', cov_kwds=hac_cov_kwds); "
               "L = floor(4 (n/100)^(2/9)); Bartlett weights 1 - l/(L+1); no n/(n-k) factor; "
               "normal p-values and intervals",
        "note": "docs/notes/statsmodels_hac.md",
        "cases": cases,
    }
    text = json.dumps(doc, indent=1, allow_nan=False)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    for c in cases:
        h, m = c["hac"], c["mann_kendall"]
        print(f"{c['name']}: L={c['hac_maxlags']} slope {h['slope']:+.5f} ± {h['slope_bse']:.5f} "
              f"(HAC p {h['slope_pvalue']:.3g}, OLS p {c['ols']['slope_pvalue']:.3g}); "
              f"MK {m['trend']} p {m['p']:.3g} Sen {m['slope']:+.5f}; "
              f"HR p {c['hamed_rao']['p']:.3g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
