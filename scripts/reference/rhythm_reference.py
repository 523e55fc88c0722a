#!/usr/bin/env python3
"""Reference values for operators/src/rhythm (Lomb–Scargle periodogram and cosinor).

Writes operators/tests/data/rhythm_reference.json, which the Rust test
operators/tests/rhythm_reference.rs reads; the test does not need Python. Rerun after changing
the cases (the output is deterministic: every case has its own numpy seed):

    $(./scripts/pyenv.sh) scripts/reference/rhythm_reference.py

Generated with astropy 8.0.2, numpy 2.4, scipy 1.17 (the versions actually used are recorded in
the JSON).

Lomb–Scargle: astropy.timeseries.LombScargle(t, y) with its defaults (fit_mean=True,
center_data=True, normalization='standard', nterms=1, no dy), i.e. the generalised periodogram
of Zechmeister & Kürster (2009, A&A 496, 577); see VanderPlas (2018, ApJS 236, 16). Powers are
computed with method='cython', the exact O(N·M) sum that method='auto' also picks for fewer than
200 frequencies (for longer regular grids 'auto' switches to the approximate Press & Rybicki
'fast' method). The frequency grid is astropy's autofrequency(samples_per_peak,
minimum_frequency=1/max_period, maximum_frequency=1/min_period). The refined peak is the
maximum of the continuous periodogram between the grid neighbours of the best grid point, found
by a dense grid then scipy.optimize.minimize_scalar (bounded Brent). The false-alarm
probability is astropy's false_alarm_probability(power, method='baluev', ...) (Baluev 2008,
MNRAS 385, 1279) at the refined power.

Cosinor: an independent implementation of the single-component cosinor of Cornelissen (2014,
Theor Biol Med Model 11:16; Bingham et al. 1982, Chronobiologia 9:397): numpy.linalg.lstsq for
M, beta, gamma; standard errors from the closed forms in the centred second moments X, Z, T of
cos(wt), sin(wt); the zero-amplitude F-test with scipy.stats.f; t-based 95 % intervals with
scipy.stats.t (delta method for amplitude and acrophase). It deliberately shares no code or
route with the Rust (which uses QR and (X'X)^-1 = R^-1 R^-T).

NaN inputs are encoded as JSON null. Rows with a NaN in t or y are dropped before astropy or the
cosinor see them, as the Rust does.
"""

import json
import math
import re
from pathlib import Path

import astropy
import numpy as np
import scipy
from astropy.timeseries import LombScargle
from scipy import optimize, stats

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "operators" / "tests" / "data" / "rhythm_reference.json"


def uneven_times(rng, n, days, gaps, t0=0.0):
    """n sorted times over `days`, uniform at random, outside the (start, length) gaps (hours)."""
    span = days * 24.0
    keep = []
    while len(keep) < n:
        cand = rng.uniform(0.0, span, 4 * n)
        ok = np.ones(cand.size, dtype=bool)
        for start, length in gaps:
            ok &= ~((cand >= start) & (cand < start + length))
        keep.extend(cand[ok].tolist())
    return t0 + np.sort(np.array(keep[:n]))


def make_case(name, seed, n, days, period, amplitude, mesor, noise, gaps, search, *,
              samples_per_peak=5.0, t0=0.0, nan_t=0, nan_y=0, cosinor_periods=()):
    rng = np.random.default_rng(seed)
    t = uneven_times(rng, n, days, gaps, t0)
    phase = rng.uniform(-np.pi, np.pi)
    signal = 0.0 if period is None else amplitude * np.cos(2 * np.pi * (t - t0) / period + phase)
    y = mesor + signal + rng.normal(0.0, noise, n)
    t_in, y_in = t.copy(), y.copy()
    if nan_y:
        t_idx = rng.choice(n, size=nan_y, replace=False)
        y_in[t_idx] = np.nan
    if nan_t:
        t_idx = rng.choice(n, size=nan_t, replace=False)
        t_in[t_idx] = np.nan
    ok = np.isfinite(t_in) & np.isfinite(y_in)
    tu, yu = t_in[ok], y_in[ok]

    min_p, max_p = search
    fmin, fmax = 1.0 / max_p, 1.0 / min_p
    ls = LombScargle(tu, yu)
    grid = ls.autofrequency(samples_per_peak=samples_per_peak, minimum_frequency=fmin,
                            maximum_frequency=fmax)
    baseline = tu.max() - tu.min()
    step = 1.0 / baseline / samples_per_peak
    grid_powers = ls.power(grid, method="cython")
    k = int(np.argmax(grid_powers))
    top2 = np.sort(grid_powers)[-2:]
    assert top2[1] - top2[0] > 1e-9, f"{name}: grid maximum is not unique enough"

    # Test frequencies: ends of the range, the true frequency, and random ones around the range.
    test_f = [fmin, fmax] + ([] if period is None else [1.0 / period])
    test_f += rng.uniform(0.5 * fmin, 2.0 * fmax, 8).tolist()
    test_f = np.array(test_f)
    test_p = ls.power(test_f, method="cython")

    # Refined peak: the continuous maximum between the grid neighbours.
    lo = grid[k - 1] if k > 0 else grid[k]
    hi = grid[k + 1] if k + 1 < grid.size else grid[k]
    power1 = lambda f: float(ls.power(np.array([f]), method="cython")[0])
    dense = np.linspace(lo, hi, 2001)
    dense_p = ls.power(dense, method="cython")
    j = int(np.argmax(dense_p))
    a, b = dense[max(j - 1, 0)], dense[min(j + 1, dense.size - 1)]
    if a < b:
        res = optimize.minimize_scalar(lambda f: -power1(f), bounds=(a, b), method="bounded",
                                       options={"xatol": 1e-15, "maxiter": 500})
        f_ref, p_ref = float(res.x), -float(res.fun)
    else:
        f_ref, p_ref = float(dense[j]), float(dense_p[j])
    if dense_p[j] > p_ref:
        f_ref, p_ref = float(dense[j]), float(dense_p[j])

    fap_kw = dict(method="baluev", minimum_frequency=fmin, maximum_frequency=fmax,
                  samples_per_peak=samples_per_peak)
    fap = float(ls.false_alarm_probability(p_ref, **fap_kw))
    _, fap_fmax = ls.autofrequency(samples_per_peak=samples_per_peak, minimum_frequency=fmin,
                                   maximum_frequency=fmax, return_freq_limits=True)
    curve_z = np.array([0.005, 0.02, 0.05, 0.1, 0.2, 0.4])
    curve_fap = ls.false_alarm_probability(curve_z, **fap_kw)

    periods = list(dict.fromkeys(
        ([] if period is None else [period]) + [24.0] + list(cosinor_periods) + [1.0 / f_ref]))
    cos_fits = [cosinor_reference(tu, yu, p) for p in periods]

    return {
        "name": name,
        "seed": seed,
        "true_period_hours": period,
        "t": [None if not math.isfinite(v) else float(v) for v in t_in],
        "y": [None if not math.isfinite(v) else float(v) for v in y_in],
        "n_points": int(ok.sum()),
        "n_skipped": int((~ok).sum()),
        "min_period_hours": min_p,
        "max_period_hours": max_p,
        "samples_per_peak": samples_per_peak,
        "test_frequencies": test_f.tolist(),
        "test_powers": test_p.tolist(),
        "grid_start": float(grid[0]),
        "grid_step": float(step),
        "grid_len": int(grid.size),
        "grid_powers": grid_powers.tolist(),
        "grid_best_index": k,
        "grid_best_frequency": float(grid[k]),
        "grid_best_power": float(grid_powers[k]),
        "refined_frequency": f_ref,
        "refined_period_hours": 1.0 / f_ref,
        "refined_power": p_ref,
        "fap_max_frequency": float(fap_fmax),
        "false_alarm_probability": fap,
        "fap_curve_powers": curve_z.tolist(),
        "fap_curve": np.asarray(curve_fap).tolist(),
        "cosinor": cos_fits,
    }


def cosinor_reference(t, y, tau):
    """Single-component cosinor, Cornelissen (2014) closed forms."""
    n = t.size
    w = 2.0 * np.pi / tau
    x, z = np.cos(w * t), np.sin(w * t)
    design = np.column_stack([np.ones(n), x, z])
    (m, beta, gamma), *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = m + beta * x + gamma * z
    rss = float(np.sum((y - fitted) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    ssm = float(np.sum((fitted - y.mean()) ** 2))
    dof = n - 3
    sigma = math.sqrt(rss / dof)

    xb, zb = x.mean(), z.mean()
    X = np.mean((x - xb) ** 2)
    Z = np.mean((z - zb) ** 2)
    T = np.mean((x - xb) * (z - zb))
    det = X * Z - T * T

    amp = math.hypot(beta, gamma)
    phi = math.atan2(-gamma, beta)
    if phi <= -math.pi:
        phi += 2.0 * math.pi
    c, s = math.cos(phi), math.sin(phi)
    se_m = sigma * math.sqrt(1.0 / n + (xb * xb * Z + zb * zb * X - 2.0 * xb * zb * T) / (n * det))
    se_a = sigma * math.sqrt((Z * c * c + 2.0 * T * c * s + X * s * s) / (n * det))
    se_phi = sigma / amp * math.sqrt((Z * s * s - 2.0 * T * s * c + X * c * c) / (n * det))
    tc = float(stats.t.ppf(0.975, dof))
    f_stat = (ssm / 2.0) / (rss / dof)
    return {
        "period_hours": float(tau),
        "mesor": float(m),
        "amplitude": amp,
        "acrophase_rad": phi,
        "peak_time_hours": float((-phi * tau / (2.0 * math.pi)) % tau),
        "p_value": float(stats.f.sf(f_stat, 2, dof)),
        "f_statistic": f_stat,
        "mesor_ci": [m - tc * se_m, m + tc * se_m],
        "amplitude_ci": [amp - tc * se_a, amp + tc * se_a],
        "acrophase_ci": [phi - tc * se_phi, phi + tc * se_phi],
        "r_squared": 1.0 - rss / sst,
        "residual_se": sigma,
        "n_points": int(n),
    }


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    out = Path(ap.parse_args().out).resolve()
    cases = [
        make_case("p20.7h_3d_n50", 11, 50, 3, 20.7, 2.0, 5.0, 0.5, [(30.0, 8.0)], (12.0, 36.0)),
        make_case("p24h_7d_n400", 12, 400, 7, 24.0, 1.5, 37.0, 1.0,
                  [(50.0, 14.0), (110.0, 6.0)], (16.0, 32.0)),
        make_case("p27h_10d_n2000", 13, 2000, 10, 27.0, 1.0, -3.0, 2.0,
                  [(20.0, 10.0), (130.0, 18.0), (200.0, 5.0)], (10.0, 40.0)),
        make_case("p24h_6d_n300_spp10_epoch", 14, 300, 6, 24.0, 0.8, 1013.0, 0.6,
                  [(70.0, 12.0)], (18.0, 30.0), samples_per_peak=10.0, t0=491_000.0),
        make_case("noise_5d_n200", 15, 200, 5, None, 0.0, 0.0, 1.0, [(40.0, 10.0)], (2.0, 48.0)),
        make_case("nan_rows_p24h_4d_n120", 16, 120, 4, 24.0, 1.2, 20.0, 0.4, [(60.0, 6.0)],
                  (16.0, 32.0), nan_t=3, nan_y=9, cosinor_periods=(22.5,)),
    ]
    doc = {
        "generator": "scripts/reference/rhythm_reference.py",
        "astropy_version": astropy.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "lomb_scargle": "LombScargle(t, y) defaults; power(method='cython'); "
                        "false_alarm_probability(method='baluev')",
        "cosinor": "independent numpy/scipy implementation of Cornelissen (2014), 95 % intervals",
        "cases": cases,
    }
    text = json.dumps(doc, indent=1, allow_nan=False)
    # Keep arrays of numbers on one line each.
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    for c in cases:
        print(f"{c['name']}: N={c['n_points']} skipped={c['n_skipped']} grid={c['grid_len']} "
              f"peak={c['refined_period_hours']:.4f} h P={c['refined_power']:.4f} "
              f"FAP={c['false_alarm_probability']:.3g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
