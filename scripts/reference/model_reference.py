#!/usr/bin/env python3
"""Reference values for the KaiABC clock model, computed with SciPy, for the Rust tests.

What this computes
------------------
An independent Python implementation of the per-node KaiABC model as the Rust crate
`kaiabc-operators` implements it (the three-state phosphoform model of Rust, Markson, Lane,
Fisher & O'Shea 2007, with an Arrhenius temperature transfer), integrated with
`scipy.integrate.solve_ivp(method="LSODA", rtol=1e-10, atol=1e-12, dense_output=True)`. Extrema
are located as zeros of the time derivative of each observable along the dense output (a maximum
is a + -> - crossing of d/dt, a minimum a - -> + crossing), bracketed on 8 points per accepted step
and refined with brentq, so peak times are not limited by an output grid (see `run`).

It writes `operators/tests/data/model_reference.json` with:

* `free_running`   period at constant 25, 27.5, 30, 32.5, 35 degC for the `compensated` and
                   `uncompensated` presets; at 30 degC the T -> D -> S peak lags, the range of the
                   total phosphorylated fraction (T+D+S)/C_tot and of the S431 fraction (S+D)/C_tot,
                   the fraction of the cycle with free KaiA A == 0, and one limit-cycle state at
                   the peak of total phosphorylation.
* `damped`         A_tot = 2.0 uM at 30 degC: cycle amplitudes from the same initial condition.
* `entrainment`    compensated preset driven by Theta(t) = 303.15 + a*sin(2 pi t / 24) K,
                   a = 5 and 2.5 K, from several initial phases of the 30 degC limit cycle:
                   peak-to-peak periods over days 12-20 and the peak time of total
                   phosphorylation modulo 24 h on the last days.
* `kaia_prc`       a KaiA step (A_tot x2 and x0.5 for 2 h at 30 degC, the compensated preset):
                   the asymptotic phase shift at 4 phases after the peak of total
                   phosphorylation.
* `uncompensated_prc`  the time-rescaling check: with E0 == EA every rate is multiplied by the
                   same Arrhenius factor f, so a +5 K pulse of length D advances the clock by
                   (f - 1)*D at every phase; compared with simulation at 4 phases.

The model (states in uM; U = C_tot - T - D - S; free KaiA A = max(0, A_tot - 2 S);
fA = A / (K_half + A)):

    k_XY = max(0, k0_XY * g0 + kA_XY * gA * fA)
    dT/dt = k_UT U + k_DT D - k_TU T - k_TD T
    dD/dt = k_TD T + k_SD S - k_DT D - k_DS D
    dS/dt = k_US U + k_DS D - k_SU S - k_SD S
    g0 = s * exp(-E0/R (1/Theta - 1/Theta_ref)),  gA = s * exp(-EA/R (1/Theta - 1/Theta_ref))

References
----------
* M. J. Rust, J. S. Markson, W. S. Lane, D. S. Fisher, E. K. O'Shea, "Ordered phosphorylation
  governs oscillation of a three-protein circadian clock", Science 318:809-812 (2007).
  (Model structure, rate constants, C_tot, A_tot, K_half.)
* T. Yoshida, Y. Murayama, H. Ito, H. Kageyama, T. Kondo, "Nonparametric entrainment of the in
  vitro circadian phosphorylation rhythm of cyanobacterial KaiC by temperature cycle",
  PNAS 106:1648-1653 (2009). (Entrainment of the KaiABC oscillator by temperature cycles.)
* M. Nakajima, K. Imai, H. Ito, T. Nishiwaki, Y. Murayama, H. Iwasaki, T. Oyama, T. Kondo,
  "Reconstitution of circadian oscillation of cyanobacterial KaiC phosphorylation in vitro",
  Science 308:414-415 (2005). (Temperature compensation of the in vitro period.)

Usage: $(./scripts/pyenv.sh) scripts/reference/model_reference.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.integrate import solve_ivp

# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

C_TOT = 3.4  # uM
A_TOT = 1.3  # uM
K_HALF = 0.43  # uM
THETA_REF = 303.15  # K
R_GAS = 8.314462618  # J/(mol K)

# order: UT, TD, SD, US, TU, DT, DS, SU
RATE_NAMES = ("UT", "TD", "SD", "US", "TU", "DT", "DS", "SU")
K0 = np.array([0.0, 0.0, 0.0, 0.0, 0.21, 0.0, 0.31, 0.11])
KA = np.array([0.479077, 0.212923, 0.505692, 0.0532308, 0.0798462, 0.1730, -0.319385, -0.133077])

PRESETS = {
    "compensated": {"EA_J_per_mol": 45_000.0, "E0_J_per_mol": 25_000.0},
    "uncompensated": {"EA_J_per_mol": 40_000.0, "E0_J_per_mol": 40_000.0},
}

RTOL = 1e-10
ATOL = 1e-12
METHOD = "LSODA"

Y0 = (0.68, 1.36, 0.34)  # T, D, S in uM: a point in the oscillatory domain
TRANSIENT_HOURS = 600.0  # about 29 cycles of 20.7 h


def arrhenius(e_j_per_mol: float, theta_k: float, scale: float = 1.0) -> float:
    return scale * math.exp(-e_j_per_mol / R_GAS * (1.0 / theta_k - 1.0 / THETA_REF))


def make_rhs(preset: str, theta, a_tot: float = A_TOT, scale: float = 1.0):
    """theta: a constant temperature in K or a callable t -> K."""
    ea = PRESETS[preset]["EA_J_per_mol"]
    e0 = PRESETS[preset]["E0_J_per_mol"]
    const = not callable(theta)
    if const:
        g0c = arrhenius(e0, float(theta), scale)
        gAc = arrhenius(ea, float(theta), scale)

    def rhs(t, y):
        T, D, S = y
        U = C_TOT - T - D - S
        A = max(0.0, a_tot - 2.0 * S)
        fA = A / (K_HALF + A)
        if const:
            g0, gA = g0c, gAc
        else:
            th = theta(t)
            g0, gA = arrhenius(e0, th, scale), arrhenius(ea, th, scale)
        k = np.maximum(0.0, K0 * g0 + KA * gA * fA)
        kUT, kTD, kSD, kUS, kTU, kDT, kDS, kSU = k
        dT = kUT * U + kDT * D - kTU * T - kTD * T
        dD = kTD * T + kSD * S - kDT * D - kDS * D
        dS = kUS * U + kDS * D - kSU * S - kSD * S
        return np.array([dT, dD, dS])

    return rhs


# ----------------------------------------------------------------------------------------------
# Integration with extremum events
# ----------------------------------------------------------------------------------------------

# observables: name -> (weights on [dT, dD, dS]); extremum of w.y is a zero of w.rhs
OBS = {
    "T": np.array([1.0, 0.0, 0.0]),
    "D": np.array([0.0, 1.0, 0.0]),
    "S": np.array([0.0, 0.0, 1.0]),
    "total": np.array([1.0, 1.0, 1.0]),
    "s431": np.array([0.0, 1.0, 1.0]),  # S + D
}


def _roots(g, grid, gv, direction):
    """Zeros of g on [grid[0], grid[-1]] where g changes sign in `direction` (+1: - to +,
    -1: + to -), refined with brentq. gv = g(grid)."""
    from scipy.optimize import brentq
    out = []
    for i in np.nonzero((gv[:-1] * direction < 0) & (gv[1:] * direction >= 0))[0]:
        a, b = grid[i], grid[i + 1]
        if gv[i + 1] == 0.0:
            out.append(b)
        else:
            out.append(brentq(g, a, b, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=200))
    return np.array(out)


def run(rhs, t0, t1, y0, with_events=True, a_tot=A_TOT):
    """Integrate, then locate extrema on the dense output.

    Extremum times are zeros of d(w.y)/dt = w.rhs(t, y(t)) evaluated along the dense (LSODA
    Nordsieck) interpolant; each accepted step is subdivided 8x to bracket sign changes, which are
    refined with brentq. (solve_ivp's own `events` is not used: with LSODA the interpolant at a
    step end can differ from the step's y by ~rtol, so its bracket check can fail when a
    derivative is ~0 exactly at a step end.) Returns (sol, ev) with ev[(name, "max"|"min")] =
    (times, states (3, n)) and ev[("A", "A_enter_zero"|"A_leave_zero")] for 2 S crossing A_tot.
    """
    sol = solve_ivp(rhs, (t0, t1), np.asarray(y0, float), method=METHOD, rtol=RTOL, atol=ATOL,
                    dense_output=True)
    if not sol.success:
        raise RuntimeError(sol.message)
    ev = {}
    if not with_events:
        return sol, ev
    ts = sol.t
    sub = 8
    grid = np.concatenate([np.linspace(ts[i], ts[i + 1], sub, endpoint=False)
                           for i in range(len(ts) - 1)] + [ts[-1:]])
    yg = sol.sol(grid)
    dg = np.array([rhs(t, yg[:, j]) for j, t in enumerate(grid)]).T  # (3, n)
    for name, w in OBS.items():
        def g(t, w=w):
            return float(w @ rhs(t, sol.sol(t)))
        gv = w @ dg
        for kind, direction in (("max", -1.0), ("min", 1.0)):
            te = _roots(g, grid, gv, direction)
            ev[(name, kind)] = (te, sol.sol(te) if len(te) else np.zeros((3, 0)))

    def ga(t):
        return a_tot - 2.0 * float(sol.sol(t)[2])
    gv = a_tot - 2.0 * yg[2]
    for kind, direction in (("A_enter_zero", -1.0), ("A_leave_zero", 1.0)):
        te = _roots(ga, grid, gv, direction)
        ev[("A", kind)] = (te, sol.sol(te) if len(te) else np.zeros((3, 0)))
    return sol, ev


def limit_cycle_state(preset="compensated", theta=THETA_REF, a_tot=A_TOT):
    rhs = make_rhs(preset, theta, a_tot)
    sol, _ = run(rhs, 0.0, TRANSIENT_HOURS, Y0, with_events=False)
    return sol.y[:, -1]


def peaks_total(ev):
    return ev[("total", "max")]


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------

MEASURE_HOURS = 12 * 24.0  # >= 12 cycles measured after the transient


def free_running():
    out = {"temperatures_C": [25.0, 27.5, 30.0, 32.5, 35.0], "presets": {}}
    at30 = None
    for preset in PRESETS:
        rows = []
        for tc in out["temperatures_C"]:
            theta = 273.15 + tc
            rhs = make_rhs(preset, theta)
            sol0, _ = run(rhs, 0.0, TRANSIENT_HOURS, Y0, with_events=False)
            sol, ev = run(rhs, TRANSIENT_HOURS, TRANSIENT_HOURS + MEASURE_HOURS, sol0.y[:, -1])
            tp, yp = peaks_total(ev)
            periods = np.diff(tp)
            rows.append({
                "temperature_C": tc,
                "temperature_K": theta,
                "g0": arrhenius(PRESETS[preset]["E0_J_per_mol"], theta),
                "gA": arrhenius(PRESETS[preset]["EA_J_per_mol"], theta),
                "period_hours": float(np.mean(periods)),
                "period_cycles_averaged": int(len(periods)),
                "period_spread_hours": float(np.max(periods) - np.min(periods)),
            })
            if preset == "compensated" and tc == 30.0:
                at30 = (sol, ev, float(np.mean(periods)))
        out["presets"][preset] = {**PRESETS[preset], "periods": rows}

    sol, ev, period = at30
    tT = ev[("T", "max")][0]
    tD = ev[("D", "max")][0]
    tS = ev[("S", "max")][0]
    lags_td, lags_ds = [], []
    for t in tT[:-2]:
        d = tD[tD > t][0]
        s = tS[tS > d][0]
        lags_td.append(d - t)
        lags_ds.append(s - d)
    tot_max = ev[("total", "max")][1].sum(axis=0) / C_TOT
    tot_min = ev[("total", "min")][1].sum(axis=0) / C_TOT
    s431_max = (ev[("s431", "max")][1][1] + ev[("s431", "max")][1][2]) / C_TOT
    s431_min = (ev[("s431", "min")][1][1] + ev[("s431", "min")][1][2]) / C_TOT
    t_in = ev[("A", "A_enter_zero")][0]
    t_out = ev[("A", "A_leave_zero")][0]
    zero_durations = []
    for t in t_in:
        later = t_out[t_out > t]
        if len(later):
            zero_durations.append(later[0] - t)
    tp, yp = peaks_total(ev)
    i = len(tp) // 2
    state = yp[:, i]
    # check on a dense grid too (independent of events)
    grid = np.linspace(tp[0], tp[-1], 400_001)[:-1]  # whole cycles only
    yg = sol.sol(grid)
    frac_zero_grid = float(np.mean(A_TOT - 2.0 * yg[2] <= 0.0))
    detail = {
        "preset": "compensated (identical to uncompensated at 30 degC: g0 = gA = 1)",
        "temperature_K": THETA_REF,
        "period_hours": period,
        "lag_T_to_D_hours": float(np.mean(lags_td)),
        "lag_D_to_S_hours": float(np.mean(lags_ds)),
        "total_phospho_fraction_min": float(np.mean(tot_min)),
        "total_phospho_fraction_max": float(np.mean(tot_max)),
        "free_kaia_zero_fraction_of_cycle": float(np.mean(zero_durations) / period),
        "free_kaia_zero_fraction_dense_grid_check": frac_zero_grid,
        "s431_fraction_min": float(np.mean(s431_min)),
        "s431_fraction_max": float(np.mean(s431_max)),
        "T_peak_fraction": float(np.mean(ev[("T", "max")][1][0]) / C_TOT),
        "D_peak_fraction": float(np.mean(ev[("D", "max")][1][1]) / C_TOT),
        "S_peak_fraction": float(np.mean(ev[("S", "max")][1][2]) / C_TOT),
        "limit_cycle_state_at_total_peak_TDS_uM": [float(x) for x in state],
        "limit_cycle_state_note": "state [T, D, S] at a maximum of T+D+S; integrating it for one "
                                  "period_hours returns to itself",
    }
    # closure check of the recorded state
    rhs = make_rhs("compensated", THETA_REF)
    s2, _ = run(rhs, 0.0, period, state, with_events=False)
    detail["limit_cycle_state_return_error_uM"] = float(np.max(np.abs(s2.y[:, -1] - state)))
    out["at_30C"] = detail
    return out


def damped():
    a_tot = 2.0
    rhs = make_rhs("compensated", THETA_REF, a_tot)
    sol, ev = run(rhs, 0.0, 60 * 24.0, Y0, a_tot=a_tot)
    tmax, ymax = ev[("total", "max")]
    tmin, ymin = ev[("total", "min")]
    cycles = []
    for k, t in enumerate(tmax):
        nxt = tmin[tmin > t]
        if not len(nxt):
            break
        j = np.argmax(tmin > t)
        amp = (ymax[:, k].sum() - ymin[:, j].sum()) / C_TOT
        cycles.append({"cycle": k + 1, "peak_time_h": float(t), "amplitude_fraction": float(amp)})
    res = {
        "A_tot_uM": a_tot,
        "temperature_K": THETA_REF,
        "initial_state_TDS_uM": list(Y0),
        "amplitude_definition": "(peak - following trough) of (T+D+S)/C_tot; cycle k = k-th peak",
        "simulated_hours": 60 * 24.0,
        "n_peaks": len(tmax),
    }
    yend = sol.y[:, -1]
    res["final_state_TDS_uM"] = [float(x) for x in yend]
    res["final_total_fraction"] = float(yend.sum() / C_TOT)
    res["final_derivative_norm_uM_per_h"] = float(np.linalg.norm(rhs(0.0, yend)))
    # fixed point and its linearisation (for the decay rate)
    from scipy.optimize import fsolve
    fp = fsolve(lambda y: rhs(0.0, y), yend, xtol=1e-14)
    J = np.empty((3, 3))
    h = 1e-7
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        J[:, i] = (rhs(0.0, fp + e) - rhs(0.0, fp - e)) / (2 * h)
    eig = np.linalg.eigvals(J)
    res["fixed_point_TDS_uM"] = [float(x) for x in fp]
    res["fixed_point_total_fraction"] = float(fp.sum() / C_TOT)
    res["fixed_point_free_kaia_uM"] = float(max(0.0, a_tot - 2 * fp[2]))
    res["fixed_point_jacobian_eigenvalues_per_h"] = [[float(e.real), float(e.imag)] for e in eig]
    # distance from the fixed point along the run (the approach is what "damps" means here)
    checkpoints = [0.0, 6.0, 12.0, 24.0, 48.0, 96.0, 192.0]
    res["distance_to_fixed_point_uM"] = [
        [t, float(np.max(np.abs(sol.sol(t) - fp)))] for t in checkpoints]
    # total-phosphorylation extrema with an amplitude above numerical noise
    real = [c for c in cycles if c["amplitude_fraction"] > 1e-8]
    res["cycles_above_1e-8"] = real
    res["oscillates"] = len(real) >= 2
    res["final_amplitude_fraction"] = real[-1]["amplitude_fraction"] if real else 0.0
    res["ratio_cycle10_over_cycle2"] = (real[9]["amplitude_fraction"] / real[1]["amplitude_fraction"]
                                        if len(real) >= 10 else None)
    res["mean_period_hours"] = (float(np.mean(np.diff([c["peak_time_h"] for c in real])))
                                if len(real) >= 2 else None)
    fp_tot = fp.sum() / C_TOT
    res["total_fraction_extrema_off_fixed_point_by_1e-9"] = sorted(
        [["max", float(t), float(ymax[:, k].sum() / C_TOT)] for k, t in enumerate(tmax)]
        + [["min", float(t), float(ymin[:, k].sum() / C_TOT)] for k, t in enumerate(tmin)],
        key=lambda r: r[1])
    res["total_fraction_extrema_off_fixed_point_by_1e-9"] = [
        r for r in res["total_fraction_extrema_off_fixed_point_by_1e-9"] if abs(r[2] - fp_tot) > 1e-9]
    return res


def circ_wrap(x, p=24.0):
    return (x + p / 2) % p - p / 2


def entrainment():
    lc_rhs = make_rhs("compensated", THETA_REF)
    base = limit_cycle_state()
    sol0, ev0 = run(lc_rhs, 0.0, 60.0, base)
    tp = ev0[("total", "max")][0]
    t_peak = tp[0]
    period = np.mean(np.diff(tp))
    starts = []
    for frac in (0.0, 0.25, 0.5, 0.75):
        t = t_peak + frac * period
        starts.append({"phase_fraction_after_total_peak": frac,
                       "state_TDS_uM": [float(v) for v in sol0.sol(t)]})
    out = {"preset": "compensated",
           "temperature": "Theta(t) = 303.15 + amplitude*sin(2*pi*t/24) K, t in hours from 0",
           "starts": starts,
           "amplitudes": {}}
    for amp in (5.0, 2.5):
        theta = (lambda a: (lambda t: THETA_REF + a * math.sin(2 * math.pi * t / 24.0)))(amp)
        rhs = make_rhs("compensated", theta)
        runs = []
        for st in starts:
            days = 20
            sol, ev = run(rhs, 0.0, days * 24.0, st["state_TDS_uM"])
            tp = ev[("total", "max")][0]
            late = tp[(tp >= 12 * 24.0) & (tp <= 20 * 24.0)]
            per = np.diff(late)
            last = tp[tp >= 15 * 24.0]
            runs.append({
                "start_phase_fraction": st["phase_fraction_after_total_peak"],
                "period_days12_20_mean_hours": float(np.mean(per)) if len(per) else None,
                "period_days12_20_min_hours": float(np.min(per)) if len(per) else None,
                "period_days12_20_max_hours": float(np.max(per)) if len(per) else None,
                "peak_times_days15_20_hours": [float(x) for x in last],
                "peak_time_mod24_days15_20_hours": [float(x % 24.0) for x in last],
            })
        # agreement between starts: compare the final peak phase (circularly)
        finals = [r["peak_time_mod24_days15_20_hours"][-1] for r in runs]
        ref = finals[0]
        spread = max(abs(circ_wrap(f - ref)) for f in finals)
        # drift of the phase over the last days within each run
        drift = max(abs(circ_wrap(r["peak_time_mod24_days15_20_hours"][-1]
                                  - r["peak_time_mod24_days15_20_hours"][0])) for r in runs)
        res = {"amplitude_K": amp, "days": 20, "runs": runs,
               "final_peak_mod24_spread_between_starts_hours": float(spread),
               "max_phase_drift_days15_20_hours": float(drift)}
        # longer run to see whether (and when) the weaker cycle locks
        if amp == 2.5:
            long_runs = []
            for st in starts:
                sol, ev = run(rhs, 0.0, 80 * 24.0, st["state_TDS_uM"])
                tp = ev[("total", "max")][0]
                per_day = []
                for d0 in range(0, 80, 5):
                    sel = tp[(tp >= d0 * 24) & (tp < (d0 + 5) * 24)]
                    if len(sel) >= 2:
                        per_day.append([d0, d0 + 5, float(np.mean(np.diff(sel))),
                                        float(sel[-1] % 24.0)])
                late = tp[tp >= 20 * 24.0]
                long_runs.append({"start_phase_fraction": st["phase_fraction_after_total_peak"],
                                  "mean_period_days20_80_hours": float(np.mean(np.diff(late))),
                                  "windows_[day_from,day_to,mean_period_h,last_peak_mod24_h]": per_day})
            finals = [r["windows_[day_from,day_to,mean_period_h,last_peak_mod24_h]"][-1][3]
                      for r in long_runs]
            res["long_80_days"] = {
                "note": "peak-to-peak periods and last peak time mod 24 h per 5-day window",
                "runs": long_runs,
                "final_peak_mod24_spread_between_starts_hours":
                    float(max(abs(circ_wrap(f - finals[0])) for f in finals)),
            }
        out["amplitudes"][f"{amp:g}K"] = res
    return out


def uncompensated_prc():
    e = PRESETS["uncompensated"]["EA_J_per_mol"]
    f = arrhenius(e, THETA_REF + 5.0)
    dur = 2.0
    predicted = (f - 1.0) * dur
    rhs = make_rhs("uncompensated", THETA_REF)
    base = limit_cycle_state("uncompensated")
    # unperturbed reference run
    horizon = 8 * 24.0 + 48.0
    sol_ref, ev_ref = run(rhs, 0.0, horizon, base)
    tp_ref = ev_ref[("total", "max")][0]
    period = float(np.mean(np.diff(tp_ref)))
    t0 = tp_ref[0]
    hot = make_rhs("uncompensated", THETA_REF + 5.0)
    shifts = []
    for frac in (0.0, 0.25, 0.5, 0.75):
        ts = t0 + frac * period
        y_s = sol_ref.sol(ts)
        s_hot, _ = run(hot, ts, ts + dur, y_s, with_events=False)
        s_after, ev = run(rhs, ts + dur, horizon, s_hot.y[:, -1])
        tp = ev[("total", "max")][0]
        # compare the 5th peak after the pulse end with the nearest reference peak
        k = np.nonzero(tp > ts + dur)[0][4]
        kr = np.argmin(np.abs(tp_ref - tp[k]))
        shifts.append({"pulse_start_phase_fraction_after_total_peak": frac,
                       "pulse_start_hours": float(ts),
                       "shift_hours_advance_positive": float(tp_ref[kr] - tp[k]),
                       "compared_peak_hours_perturbed": float(tp[k]),
                       "compared_peak_hours_reference": float(tp_ref[kr])})
    return {
        "preset": "uncompensated",
        "step": "+5 K (303.15 -> 308.15 K) for D = 2 h",
        "arrhenius_factor_35C_over_30C": f,
        "pulse_duration_hours": dur,
        "predicted_shift_hours": predicted,
        "reference_period_hours": period,
        "simulated": shifts,
        "max_abs_deviation_from_prediction_hours":
            float(max(abs(s["shift_hours_advance_positive"] - predicted) for s in shifts)),
    }


def kaia_prc():
    """A KaiA step (A_tot times a factor for D hours at the reference temperature, the
    `parameter_modulation` phase shift): the asymptotic shift at 4 phases, read off the 8th
    peak of total phosphorylation after the step against the unperturbed run."""
    dur = 2.0
    rhs = make_rhs("compensated", THETA_REF)
    base = limit_cycle_state("compensated")
    horizon = 12 * 24.0 + 48.0
    sol_ref, ev_ref = run(rhs, 0.0, horizon, base)
    tp_ref = ev_ref[("total", "max")][0]
    period = float(np.mean(np.diff(tp_ref)))
    t0 = tp_ref[0]
    out = {"preset": "compensated", "theta_K": THETA_REF, "pulse_duration_hours": dur,
           "reference_period_hours": period, "factors": {}}
    for factor in (2.0, 0.5):
        pulsed = make_rhs("compensated", THETA_REF, a_tot=A_TOT * factor)
        shifts = []
        for frac in (0.0, 0.25, 0.5, 0.75):
            ts = t0 + frac * period
            s_pulse, _ = run(pulsed, ts, ts + dur, sol_ref.sol(ts), with_events=False)
            _, ev = run(rhs, ts + dur, horizon, s_pulse.y[:, -1])
            tp = ev[("total", "max")][0]
            k = np.nonzero(tp > ts + dur)[0][7]
            kr = np.argmin(np.abs(tp_ref - tp[k]))
            shifts.append({"pulse_start_phase_fraction_after_total_peak": frac,
                           "shift_hours_advance_positive": float(tp_ref[kr] - tp[k])})
        out["factors"][f"{factor:g}"] = shifts
    return out


SECTIONS = (("free_running", free_running), ("damped", damped), ("entrainment", entrainment),
            ("uncompensated_prc", uncompensated_prc), ("kaia_prc", kaia_prc))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parents[2]
    ap.add_argument("--out", default=str(root / "operators/tests/data/model_reference.json"))
    ap.add_argument("--only", help="recompute this section alone, keeping the others")
    args = ap.parse_args()
    if args.only:
        out = Path(args.out)
        doc = json.loads(out.read_text())
        doc[args.only] = dict(SECTIONS)[args.only]()
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.only} into {out}", file=sys.stderr)
        return
    t_start = time.time()
    doc = {
        "source": {
            "model": "Rust, Markson, Lane, Fisher & O'Shea, Science 318:809 (2007), three-state "
                     "KaiC phosphoform model, with Arrhenius temperature factors g0 (E0) and gA (EA)",
            "references": [
                "Rust MJ, Markson JS, Lane WS, Fisher DS, O'Shea EK. Science 318:809-812 (2007)",
                "Yoshida T, Murayama Y, Ito H, Kageyama H, Kondo T. PNAS 106:1648-1653 (2009) "
                "(temperature-cycle entrainment)",
                "Nakajima M et al. Science 308:414-415 (2005) (temperature compensation)",
            ],
            "generator": "scripts/reference/model_reference.py",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "method": f"scipy.integrate.solve_ivp(method='{METHOD}', rtol={RTOL:g}, atol={ATOL:g}), "
                      "dense output; extrema = zeros of d(observable)/dt along the dense output "
                      "(8 brackets per step, brentq)",
            "rtol": RTOL,
            "atol": ATOL,
            "initial_condition_TDS_uM": list(Y0),
            "transient_hours": TRANSIENT_HOURS,
            "measured_hours_after_transient": MEASURE_HOURS,
        },
        "parameters": {
            "C_tot_uM": C_TOT, "A_tot_uM": A_TOT, "K_half_uM": K_HALF,
            "theta_ref_K": THETA_REF, "R_J_per_mol_K": R_GAS, "rate_scale": 1.0,
            "rates_order": list(RATE_NAMES),
            "k0_per_h": K0.tolist(), "kA_per_h": KA.tolist(),
            "presets": PRESETS,
        },
    }
    for name, fn in SECTIONS:
        t = time.time()
        doc[name] = fn()
        print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out} in {time.time() - t_start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
