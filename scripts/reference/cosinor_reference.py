#!/usr/bin/env python3
"""Reference values for multi-component and population-mean cosinor, from CosinorPy.

Writes operators/tests/data/cosinor_reference.json, which Rust tests read; the tests do not need
Python. Rerun after changing the cases (deterministic: every case has its own numpy seed, and
the Monte Carlo parts seed numpy's global generator first):

    $(./scripts/pyenv.sh) scripts/reference/cosinor_reference.py

Generated with CosinorPy 3.1 (Moškon 2020, BMC Bioinformatics 21:485), statsmodels 0.15,
pandas 3.1, numpy 2.4, scipy 1.17 (versions used are recorded in the JSON). CosinorPy 3.1 calls
np.round_, which NumPy 2 removed; this script restores it as an alias of np.round before
importing CosinorPy (the identical function under its old name) and changes nothing else.
docs/notes/cosinorpy_algorithm.md describes every formula below in detail.

Part 1, multi-component cosinor (periods 24 h and 12 h): CosinorPy
cosinor.fit_me(t, y, n_components=2, period=24, plot=False). It fits OLS (statsmodels) on the
design [1, sin(2πt/24), cos(2πt/24), sin(2πt/12), cos(2πt/12)] (this column order; sine
first), F-test p = 1 − F.cdf(F, 2K, N − 2K − 1) with F = (MSS/2K)/(RSS/(N − 2K − 1)) (so it
underflows to exactly 0 for strong rhythms), and then the rhythm parameters of the COMPOSITE
curve NUMERICALLY, on the grid X = linspace(0, 2·period, 1000) (step 48/999 h): mesor =
(max + min)/2 and amplitude = (max − min)/2 of the fitted curve on that grid (not the OLS
intercept), acrophase = −2π·t_peak/period projected to (−π, π] where t_peak = X[first index
found by scipy.signal.find_peaks with height ≥ M − 0.01·M] (M = the grid maximum; a peak
within 1 % of M counts, and the first such one is taken, not necessarily the highest). The
acrophase is therefore quantised to 2π·(48/999)/24 ≈ 0.0126 rad. Its sign convention is ours:
Y = M + A·cos(2πt/τ + φ), φ in (−π, π], negative = the peak lags the origin. To allow exact
tests of a continuous implementation, the JSON also has "composite_continuous": the same
quantities from the OLS coefficients by dense evaluation over one period plus bounded Brent
refinement (scipy), independent of CosinorPy, and the plain statsmodels OLS fit on
[1, cos24, sin24, cos12, sin12] (params, bse, cov_params, conf_int(0.05) with t quantiles,
fvalue, f_pvalue via the F survival function, rsquared, ssr, df_resid).
CosinorPy has NO analytic CIs for the composite amplitude/acrophase/mesor: it offers
(a) bootstrap=True (resample rows with np.random.choice, refit, grid-evaluate; CI = mean ±
t(0.975, B − 5)·std, circular mean/std for the acrophase) and (b) params_CI=True (Latin
hypercube samples, scikit-optimize Lhs(lhs_type="classic") from numpy's global RandomState,
inside the OLS parameter CIs; CI = estimate ± the largest deviation found). Both are Monte
Carlo. They are reproducible bit for bit in this pinned environment after np.random.seed(seed)
and are recorded under "monte_carlo" with their seeds, for loose comparisons only.

Part 2, population-mean cosinor (Cornelissen 2014, Theor Biol Med Model 11:16, §
"Population-mean cosinor"; Bingham et al. 1982; the formulas of the R package cosinor2):
cosinor1.population_fit_cosinor(df, period=24, plot_on=False). Per node i (k nodes) a single-
component OLS fit y = M_i + β_i cos(2πt/24) + γ_i sin(2πt/24) (statsmodels formula
'y ~ rrr + sss'); amplitude A_i = sqrt(β_i² + γ_i²), acrophase φ_i = atan2(−γ_i, β_i) (written
as a quadrant case analysis, then projected to (−π, π]). Population: M̄, β̄, γ̄ = plain means
over nodes; A = sqrt(β̄² + γ̄²), φ = the same quadrant formula on (β̄, γ̄) but NOT projected:
φ lies in (−2π, 0] (the JSON also gives it wrapped to (−π, π] as acrophase_wrapped).
s_M, s_β, s_γ = sample std (ddof 1) over nodes, s_βγ = sample covariance (ddof 1);
t = |t.ppf(α/2, k − 1)|, α = 0.05. MESOR CI = M̄ ± t·s_M/√k. Amplitude and acrophase by the
delta-method covariance of (A, φ):
  c22 = (s_β² β̄² + 2 s_βγ β̄ γ̄ + s_γ² γ̄²)/(k A²)
  c23 = (−(s_β² − s_γ²) β̄ γ̄ + s_βγ (β̄² − γ̄²))/(k A²)
  c33 = (s_β² γ̄² − 2 s_βγ β̄ γ̄ + s_γ² β̄²)/(k A²)
  amplitude CI = A ± t·√c22
  acrophase CI = φ + arctan((c23 t² ± t√c33·√(A² − (c22 c33 − c23²) t²/c33))/(A² − c22 t²))
(the second is Bingham's exact form, not φ ± t√c33; set to NaN when the amplitude CI contains
0). p-values: overall (zero-amplitude) F = k(k−2)/(2(k−1))·1/(1−r²)·(β̄²/s_β² − 2r β̄γ̄/(s_β s_γ)
+ γ̄²/s_γ²), r = corrcoef(β_i, γ_i), p = 1 − F.cdf(F, 2, k−2); p_mesor and p_amp two-sided t
tests 2(1 − t.cdf(|x/se|, k−1)) with se = s_M/√k and √c22; p_acr the same with
se = (upper acrophase limit − φ)/t. The script re-computes all of this independently and
asserts it equals CosinorPy's output to 1e-12; the intermediates are in the JSON. The per-node
fits are also given with cosinor1.fit_cosinor's own single-node statistics (delta-method SEs,
NORMAL 1.96-type CIs and p-values, and the model F-test p-value).
Also a two-component population fit, cosinor.population_fit(df, n_components=2, period=24,
plot=False): per-node fit_me, mean of the OLS parameter vectors, SE = sd(ddof 1)/√(k − 1) (sic,
not √k), CI = mean ± t(0.975, k−1)·SE, p = 2(1 − t.cdf(|mean/SE|, k − 1)); the rhythm parameters
are the grid evaluation (as in part 1) of the curve with the mean parameters; "ind_params_stats"
are the mean (circular mean for the acrophase, scipy.stats.circmean/circstd on (−π, π)) of the
per-node grid rhythm parameters with the same √(k − 1) SE.
"""

import importlib.metadata
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

np.round_ = np.round  # CosinorPy 3.1 uses the alias NumPy 2 removed (see the docstring)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import scipy  # noqa: E402
import statsmodels  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from CosinorPy import cosinor, cosinor1  # noqa: E402
from scipy import optimize, stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "operators" / "tests" / "data" / "cosinor_reference.json"
PERIOD = 24.0


def clean(v):
    """numpy → JSON-able, NaN/inf → None."""
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return clean(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


def wrap(phi):
    """Angle to (−π, π]."""
    phi = math.remainder(phi, 2 * math.pi)
    return math.pi if phi <= -math.pi else phi


def rhythm_dict(rp):
    keys = ["period", "amplitude", "acrophase", "mesor", "peaks", "heights", "troughs",
            "heights2", "max_loc", "period2"]
    return {k: clean(rp[k]) for k in keys}


def ols_dict(res):
    return {
        "params": res.params,
        "bse": res.bse,
        "tvalues": res.tvalues,
        "pvalues": res.pvalues,
        "cov_params": res.cov_params(),
        "conf_int": res.conf_int(0.05),
        "fvalue": res.fvalue,
        "f_pvalue": res.f_pvalue,
        "rsquared": res.rsquared,
        "rsquared_adj": res.rsquared_adj,
        "ssr": res.ssr,
        "df_resid": res.df_resid,
        "df_model": res.df_model,
        "scale": res.scale,
    }


def composite_continuous(b):
    """Continuous rhythm parameters of b0 + Σ_k (b_ck cos(kωt) + b_sk sin(kωt)), k = 1, 2."""
    w = 2 * math.pi / PERIOD

    def f(t):
        return (b[0] + b[1] * np.cos(w * t) + b[2] * np.sin(w * t)
                + b[3] * np.cos(2 * w * t) + b[4] * np.sin(2 * w * t))

    grid = np.arange(24000) * (PERIOD / 24000)
    vals = f(grid)

    def refine(sign):
        j = int(np.argmax(sign * vals))
        lo, hi = grid[j] - PERIOD / 24000, grid[j] + PERIOD / 24000
        r = optimize.minimize_scalar(lambda t: -sign * float(f(np.array([t]))[0]),
                                     bounds=(lo, hi), method="bounded",
                                     options={"xatol": 1e-12, "maxiter": 500})
        tt = float(r.x) % PERIOD
        return tt, float(f(np.array([tt]))[0])

    t_max, y_max = refine(1.0)
    t_min, y_min = refine(-1.0)
    comps = []
    for k, (bc, bs) in enumerate([(b[1], b[2]), (b[3], b[4])], start=1):
        comps.append({"period": PERIOD / k, "amplitude": math.hypot(bc, bs),
                      "acrophase": math.atan2(-bs, bc)})
    return {
        "peak_time": t_max,
        "trough_time": t_min,
        "max": y_max,
        "min": y_min,
        "amplitude": (y_max - y_min) / 2,
        "mesor_midrange": (y_max + y_min) / 2,
        "acrophase": wrap(-2 * math.pi * t_max / PERIOD),
        "components": comps,
        "method": "dense grid of 24000 points over one period, then bounded Brent "
                  "(xatol 1e-12) around the best grid point, for the maximum and the minimum",
    }


def multi_case(name, seed, t, y, mc_seed):
    design_ours = np.column_stack([np.ones_like(t), np.cos(2 * np.pi * t / 24),
                                   np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 12),
                                   np.sin(2 * np.pi * t / 12)])
    ols = sm.OLS(y, design_ours).fit()

    results, statistics, rp, x_grid, y_grid = cosinor.fit_me(t, y, n_components=2, period=24,
                                                             plot=False)
    assert x_grid.size == 1000 and x_grid[-1] == 48.0
    np.random.seed(mc_seed)
    *_, rp_bs, _, _ = cosinor.fit_me(t, y, n_components=2, period=24, plot=False,
                                     bootstrap=True, bootstrap_size=1000, bootstrap_type="std")
    np.random.seed(mc_seed + 1)
    *_, rp_ci, _, _ = cosinor.fit_me(t, y, n_components=2, period=24, plot=False,
                                     params_CI=True, samples_per_param_CI=5,
                                     max_samples_CI=1000, sampling_type="LHS")
    mc_keys = ["CI(amplitude)", "p(amplitude)", "CI(acrophase)", "p(acrophase)", "CI(mesor)",
               "p(mesor)", "DoF"]
    return {
        "name": name,
        "seed": seed,
        "period": PERIOD,
        "n_components": 2,
        "N": int(t.size),
        "t": t,
        "y": y,
        "cosinorpy": {
            "call": "cosinor.fit_me(t, y, n_components=2, period=24, plot=False)",
            "design_columns": ["const", "sin(2πt/24)", "cos(2πt/24)", "sin(2πt/12)",
                               "cos(2πt/12)"],
            "params": results.params,
            "bse": results.bse,
            "statistics": statistics,
            "rhythm_grid": {"start": 0.0, "stop": 48.0, "num": 1000},
            "rhythm": rhythm_dict(rp),
            "grid_fitted_max": float(np.max(y_grid)),
            "grid_fitted_min": float(np.min(y_grid)),
        },
        "ols": dict(ols_dict(ols), columns=["const", "cos(2πt/24)", "sin(2πt/24)",
                                            "cos(2πt/12)", "sin(2πt/12)"]),
        "composite_continuous": composite_continuous(ols.params),
        "monte_carlo": {
            "note": "Monte Carlo, grid-based: for loose comparisons only",
            "bootstrap": {"seed": mc_seed, "call": "np.random.seed(seed); fit_me(..., "
                          "bootstrap=True, bootstrap_size=1000, bootstrap_type='std')",
                          "mean(amplitude)": rp_bs["amplitude_bootstrap"],
                          "mean(acrophase)": rp_bs["acrophase_bootstrap"],
                          "mean(mesor)": rp_bs["mesor_bootstrap"],
                          **{k: rp_bs[k] for k in mc_keys}},
            "params_ci_lhs": {"seed": mc_seed + 1, "call": "np.random.seed(seed); fit_me(..., "
                              "params_CI=True, samples_per_param_CI=5, max_samples_CI=1000, "
                              "sampling_type='LHS')",
                              **{k: rp_ci[k] for k in mc_keys}},
        },
    }


def population_independent(vals, alpha=0.05):
    """Re-derivation of cosinor1.population_fit_cosinor from its formulas (for the assert)."""
    k = vals.shape[0]
    m, b, g = vals[:, 0].mean(), vals[:, 1].mean(), vals[:, 2].mean()
    amp = math.hypot(b, g)
    acr = math.atan2(-g, b)
    if acr > 0:
        acr -= 2 * math.pi  # CosinorPy's population acrophase lies in (−2π, 0]
    sm_, sb, sg = (vals[:, j].std(ddof=1) for j in range(3))
    sbg = float(np.cov(vals[:, 1], vals[:, 2])[0, 1])
    den = amp**2 * k
    c22 = (sb**2 * b**2 + 2 * sbg * b * g + sg**2 * g**2) / den
    c23 = (-(sb**2 - sg**2) * b * g + sbg * (b**2 - g**2)) / den
    c33 = (sb**2 * g**2 - 2 * sbg * b * g + sg**2 * b**2) / den
    t = abs(stats.t.ppf(alpha / 2, k - 1))
    root = math.sqrt(amp**2 - (c22 * c33 - c23**2) * t**2 / c33)
    fiu = acr + math.atan((c23 * t**2 + t * math.sqrt(c33) * root) / (amp**2 - c22 * t**2))
    fil = acr + math.atan((c23 * t**2 - t * math.sqrt(c33) * root) / (amp**2 - c22 * t**2))
    r = float(np.corrcoef(vals[:, 1], vals[:, 2])[0, 1])
    fval = (k * (k - 2) / (2 * (k - 1)) / (1 - r**2)
            * (b**2 / sb**2 - 2 * r * b * g / (sb * sg) + g**2 / sg**2))
    return {
        "k": k, "mesor": m, "beta": b, "gamma": g, "amplitude": amp, "acrophase": acr,
        "sd_mesor": sm_, "sd_beta": sb, "sd_gamma": sg, "cov_beta_gamma": sbg,
        "corr_beta_gamma": r, "c22": c22, "c23": c23, "c33": c33, "t_quantile": t,
        "mesor_ci": [m - t * sm_ / math.sqrt(k), m + t * sm_ / math.sqrt(k)],
        "amplitude_ci": [amp - t * math.sqrt(c22), amp + t * math.sqrt(c22)],
        "acrophase_ci": [fil, fiu],
        "f_value": fval,
        "p_value": 1 - stats.f.cdf(fval, 2, k - 2),
        "p_mesor": 2 * (1 - stats.t.cdf(abs(m / (sm_ / math.sqrt(k))), k - 1)),
        "p_amp": 2 * (1 - stats.t.cdf(abs(amp / math.sqrt(c22)), k - 1)),
        "p_acr": 2 * (1 - stats.t.cdf(abs(acr / ((fiu - acr) / t)), k - 1)),
    }


def make_nodes(rng, k, two_component):
    nodes = []
    for i in range(k):
        offset = float(rng.uniform(0.0, 1.0))
        t = np.arange(72) + offset
        keep = np.ones(t.size, dtype=bool)
        keep[rng.choice(t.size, size=int(rng.integers(0, 5)), replace=False)] = False
        t = t[keep]
        m = 20 + 1.0 * rng.standard_normal()
        a = 4 + 0.5 * rng.standard_normal()
        phi = -1.2 + 0.25 * rng.standard_normal()
        y = m + a * np.cos(2 * np.pi * t / 24 + phi)
        truth = {"mesor": m, "amplitude": a, "acrophase": phi}
        if two_component:
            a2 = 1.5 + 0.3 * rng.standard_normal()
            phi2 = -0.5 + 0.25 * rng.standard_normal()
            y = y + a2 * np.cos(2 * np.pi * t / 12 + phi2)
            truth.update({"amplitude_12h": a2, "acrophase_12h": phi2})
        y = y + 1.0 * rng.standard_normal(t.size)
        nodes.append({"test": f"pop_rep{i + 1}", "t": t, "y": y, "truth": truth})
    return nodes


def frame(nodes):
    return pd.DataFrame({
        "test": np.concatenate([[n["test"]] * n["t"].size for n in nodes]),
        "x": np.concatenate([n["t"] for n in nodes]),
        "y": np.concatenate([n["y"] for n in nodes]),
    })


def population_single(seed):
    rng = np.random.default_rng(seed)
    nodes = make_nodes(rng, 6, two_component=False)
    res = cosinor1.population_fit_cosinor(frame(nodes), 24, plot_on=False)
    vals = np.asarray(res["values"])
    ind = population_independent(vals)
    mine = {"amp": ind["amplitude_ci"], "acr": ind["acrophase_ci"], "MESOR": ind["mesor_ci"]}
    for key, ci in mine.items():
        assert np.allclose(res["confint"][key], ci, rtol=1e-12, atol=0), key
    assert np.allclose(res["means"][:5],
                       [ind["mesor"], ind["beta"], ind["gamma"], ind["amplitude"],
                        ind["acrophase"]], rtol=1e-12, atol=0)
    for key in ["p_value", "p_mesor", "p_amp", "p_acr"]:
        assert math.isclose(res[key], ind[key], rel_tol=1e-9, abs_tol=1e-15), key

    per_node = []
    for n, row in zip(nodes, vals):
        fit, amp, acr, st = cosinor1.fit_cosinor(n["t"], n["y"], 24, plot_on=False)
        per_node.append({
            "test": n["test"], "truth": n["truth"],
            "mesor": row[0], "beta": row[1], "gamma": row[2], "amplitude": row[3],
            "acrophase": row[4],
            "single_fit": {"parameters": list(st["parameters"]), "values": st["values"],
                           "se": st["SE"], "ci_lower": st["CI"][0], "ci_upper": st["CI"][1],
                           "p_values": st["p-values"], "f_test_p": st["F-test"]},
        })
    return {
        "name": "population_single_6_nodes",
        "seed": seed,
        "period": PERIOD,
        "call": "cosinor1.population_fit_cosinor(df, 24, plot_on=False)",
        "nodes": [{"test": n["test"], "t": n["t"], "y": n["y"]} for n in nodes],
        "per_node": per_node,
        "cosinorpy": {
            "names": res["names"],
            "values": vals,
            "means": res["means"],
            "acrophase": res["means"][4],
            "acrophase_wrapped": wrap(float(res["means"][4])),
            "mesor_ci": res["confint"]["MESOR"],
            "amplitude_ci": res["confint"]["amp"],
            "acrophase_ci": res["confint"]["acr"],
            "p_value": res["p_value"],
            "p_mesor": res["p_mesor"],
            "p_amp": res["p_amp"],
            "p_acr": res["p_acr"],
        },
        "intermediates": ind,
    }


def population_multi(seed):
    rng = np.random.default_rng(seed)
    nodes = make_nodes(rng, 6, two_component=True)
    params, statistics, sp, rp, _ = cosinor.population_fit(frame(nodes), n_components=2,
                                                           period=24, plot=False)
    return {
        "name": "population_two_component_6_nodes",
        "seed": seed,
        "period": PERIOD,
        "n_components": 2,
        "call": "cosinor.population_fit(df, n_components=2, period=24, plot=False)",
        "design_columns": ["const", "sin(2πt/24)", "cos(2πt/24)", "sin(2πt/12)", "cos(2πt/12)"],
        "nodes": [{"test": n["test"], "t": n["t"], "y": n["y"], "truth": n["truth"]}
                  for n in nodes],
        "cosinorpy": {
            "node_params": params,
            "mean_params": sp["values"],
            "se_params": sp["SE"],
            "ci_lower": sp["CI"][0],
            "ci_upper": sp["CI"][1],
            "p_values": sp["p-values"],
            "ind_params_stats": sp["ind_params_stats"],
            "statistics_pooled": statistics,
            "rhythm": rhythm_dict(rp),
        },
    }


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    out = Path(ap.parse_args().out).resolve()
    warnings.filterwarnings("ignore")  # skopt dimension-inference and divide warnings

    def signal(t, rng):
        return (10 + 3 * np.cos(2 * np.pi * t / 24 - 1) + 1.5 * np.cos(2 * np.pi * t / 12 - 0.5)
                + 0.5 * rng.standard_normal(t.size))

    rng = np.random.default_rng(31)
    t_even = np.arange(193) * 0.5
    multi = [multi_case("even_0_96h_n193", 31, t_even, signal(t_even, rng), 3101)]
    rng = np.random.default_rng(32)
    t_uneven = np.sort(rng.uniform(0.0, 72.0, 193))
    multi.append(multi_case("uneven_0_72h_n193", 32, t_uneven, signal(t_uneven, rng), 3201))

    doc = {
        "generator": "scripts/reference/cosinor_reference.py",
        "cosinorpy_version": importlib.metadata.version("CosinorPy"),
        "statsmodels_version": statsmodels.__version__,
        "pandas_version": pd.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "acrophase_convention": "Y = M + A cos(2πt/τ + φ); negative φ = peak after the origin. "
                                "fit_me acrophases and per-node acrophases are in (−π, π]; the "
                                "population_fit_cosinor mean acrophase is in (−2π, 0] "
                                "(acrophase_wrapped gives it in (−π, π])",
        "truth": "y = 10 + 3 cos(2πt/24 − 1) + 1.5 cos(2πt/12 − 0.5) + 0.5 N(0,1)",
        "note": "docs/notes/cosinorpy_algorithm.md",
        "multi_component": multi,
        "population_single": population_single(41),
        "population_multi": population_multi(42),
    }
    text = json.dumps(clean(doc), indent=1, allow_nan=False, ensure_ascii=False)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    for c in multi:
        r, cc = c["cosinorpy"]["rhythm"], c["composite_continuous"]
        print(f"{c['name']}: grid amp {r['amplitude']:.4f} acr {r['acrophase']:.4f}; "
              f"continuous amp {cc['amplitude']:.4f} acr {cc['acrophase']:.4f}")
    ps = doc["population_single"]["cosinorpy"]
    print(f"population: A {ps['means'][3]:.4f} CI {ps['amplitude_ci']}, "
          f"φ {ps['acrophase']:.4f} CI {ps['acrophase_ci']}, p {ps['p_value']:.3g}")
    print(f"wrote {out} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
