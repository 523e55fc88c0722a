#!/usr/bin/env python3
"""Reference values for a Morlet continuous wavelet transform (Torrence & Compo 1998).

Writes operators/tests/data/wavelet_reference.json, which Rust tests read; the tests do not need
Python. Rerun after changing the cases (the output is deterministic: every synthetic case has
its own numpy seed, the real case is read from datasets/ in this repository):

    $(./scripts/pyenv.sh) scripts/reference/wavelet_reference.py

Generated with pycwt 0.5.0b0 (its module reports __version__ '0.4.0b1.dev10+...', a packaging
quirk; both strings are recorded), numpy 2.4, scipy 1.17. pycwt must run WITHOUT pyfftw
installed: with pyfftw it transforms unpadded, without it (the pinned environment) it uses
scipy.fftpack and zero-pads the signal to the next power of two. The script asserts the latter.

Workflow, as in pycwt's own example (pycwt/sample/simple_sample.py), except that the series is
only mean-removed, not detrended:

    y_norm = (y - y.mean()) / y.std()                 # population std, ddof = 0
    alpha, _, _ = pycwt.ar1(y_norm)                   # Allen & Smith (1996) lag-1 estimate
    mother = pycwt.Morlet(6)
    wave, scales, freqs, coi, fft, fftfreqs = pycwt.cwt(y_norm, dt, dj, s0, J, mother)
    power = abs(wave) ** 2                            # normalised: units of sigma^2
    global_power = power.mean(axis=1)
    signif, red = pycwt.significance(1.0, dt, scales, 0, alpha,
                                     significance_level=0.95, wavelet=mother)
    global_signif, _ = pycwt.significance(1.0, dt, scales, 1, alpha, significance_level=0.95,
                                          dof=N - scales, wavelet=mother)

with dj = 1/12, s0 = 2 dt and J = int(7 / dj) = 84 (85 scales), except case short_n100 where
J = 67 so that the longest period is ~48 time units. The example passes `var` (the series
variance) instead of 1.0 to the global test because it plots var * global_power; here both
power and levels stay in normalised units (variance 1.0). dof = N - scales is exactly the
example's expression: N in samples minus scales in time units (a unit mix the example makes;
with dt = 1 it is N - s samples). Levels are "significant where power / signif > 1".

Cases: sine_24h_noise (dt 1 h, N 240), drift_24_to_20h (dt 1 h, N 480, chirp whose
instantaneous period falls linearly from 24 h at t = 0 to 20 h at the last sample), real_temperature
(datasets/greensboro-july-temperature.csv, TMY3 Greensboro NC via pvlib, BSD-3-Clause: the first
336 data rows, t_hours 0..335, file lines 2..337, regular and gap-free), short_n100 (dt 0.5,
N 100, not a power of two). The power matrix is subsampled (every 4th scale, every 8th time);
for sine_24h_noise the real and imaginary parts of `wave` are given at the same subsample.

The algorithm, to the constant, is written up in docs/notes/pycwt_algorithm.md. This script
re-implements that note independently with numpy.fft (no pycwt code) and asserts that it
reproduces pycwt to 1e-10 (relative to each quantity's scale), so the note is complete.
"""

import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import pycwt
import pycwt.helpers
import scipy
from scipy.stats import chi2

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "operators" / "tests" / "data" / "wavelet_reference.json"
TEMPERATURE_CSV = "datasets/greensboro-july-temperature.csv"
DJ = 1.0 / 12.0
OMEGA0 = 6.0


def note_ar1(x):
    """pycwt.ar1 as described in the note (Allen & Smith 1996 with Grinsted's quadratic)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    x = x - x.mean()
    c0 = float(x @ x) / n
    c1 = float(x[:-1] @ x[1:]) / (n - 1)
    a = c0 * n * n
    b = -c1 * n - c0 * n * n - 2 * c0 + 2 * c1 - c1 * n * n + c0 * n
    c = n * (c0 + c1 * n - c1)
    d = b * b - 4 * a * c
    assert d > 0
    g = (-b - math.sqrt(d)) / (2 * a)
    mu2 = -1 / n + (2 / n**2) * ((n - g**n) / (1 - g) - g * (1 - g ** (n - 1)) / (1 - g) ** 2)
    return g, math.sqrt((1 - g * g) * c0 / (1 - mu2)), mu2


def note_cwt(y_norm, dt, dj, s0, J, w0):
    """The transform as described in the note, with numpy.fft."""
    n0 = y_norm.size
    n = 1 << math.ceil(math.log2(n0))  # next power of two (n0 itself if it is one)
    flambda = 4 * math.pi / (w0 + math.sqrt(2 + w0 * w0))
    scales = s0 * 2.0 ** (np.arange(J + 1) * dj)
    k = np.arange(n)
    k = np.where(k <= (n - 1) // 2, k, k - n)  # numpy/scipy fftfreq order
    omega = 2 * math.pi * k / (n * dt)
    yf = np.fft.fft(np.concatenate([y_norm, np.zeros(n - n0)]))
    norm = np.sqrt(scales[:, None] * 2 * math.pi / dt)
    psi = math.pi**-0.25 * np.exp(-0.5 * (scales[:, None] * omega[None, :] - w0) ** 2)
    wave = np.fft.ifft(yf[None, :] * norm * psi, axis=1)[:, :n0]
    tri = n0 / 2 - np.abs(np.arange(n0) - (n0 - 1) / 2)
    coi = flambda / math.sqrt(2) * dt * tri
    return wave, scales, 1 / (flambda * scales), coi


def note_signif(dt, scales, alpha, w0, dof=None):
    flambda = 4 * math.pi / (w0 + math.sqrt(2 + w0 * w0))
    freq = dt / (scales * flambda)
    red = (1 - alpha**2) / (1 + alpha**2 - 2 * alpha * np.cos(2 * math.pi * freq))
    if dof is None:
        return red * chi2.ppf(0.95, 2) / 2
    na = np.maximum(np.asarray(dof, dtype=float), 1.0)
    nu = np.maximum(2 * np.sqrt(1 + (na * dt / 2.32 / scales) ** 2), 2.0)
    return red * chi2.ppf(0.95, nu) / nu


def close(a, b, what, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    err = float(np.max(np.abs(a - b)))
    assert err <= tol * scale, f"{what}: note reimplementation differs by {err:g} (scale {scale:g})"


def analyse(name, t, y, dt, J, source, wave_parts=False):
    n = y.size
    mean = float(y.mean())
    std = float(y.std())
    y_norm = (y - mean) / std
    alpha, ar1_a, ar1_mu2 = pycwt.ar1(y_norm)
    mother = pycwt.Morlet(OMEGA0)
    s0 = 2 * dt
    wave, scales, freqs, coi, _fft, _fftfreqs = pycwt.cwt(y_norm, dt, DJ, s0, J, mother)
    assert wave.shape == (J + 1, n) and coi.shape == (n,)
    power = np.abs(wave) ** 2
    global_power = power.mean(axis=1)
    signif, red = pycwt.significance(1.0, dt, scales, 0, alpha, significance_level=0.95,
                                     wavelet=mother)
    red = red.copy()
    dof = n - scales
    global_signif, _ = pycwt.significance(1.0, dt, scales, 1, alpha, significance_level=0.95,
                                          dof=dof.copy(), wavelet=mother)

    # The note, re-implemented without pycwt, must reproduce all of it.
    g2, a2, mu2 = note_ar1(y_norm)
    close(g2, alpha, f"{name} ar1")
    close(a2, ar1_a, f"{name} ar1 a")
    close(mu2, ar1_mu2, f"{name} ar1 mu2")
    w2, sc2, fr2, coi2 = note_cwt(y_norm, dt, DJ, s0, J, OMEGA0)
    close(sc2, scales, f"{name} scales")
    close(fr2, freqs, f"{name} freqs")
    close(coi2, coi, f"{name} coi")
    for j in range(J + 1):
        close(w2[j], wave[j], f"{name} wave row {j}")
    close(note_signif(dt, scales, alpha, OMEGA0), signif, f"{name} signif")
    close(note_signif(dt, scales, alpha, OMEGA0, dof), global_signif, f"{name} global_signif")

    rows = list(range(0, J + 1, 4))
    cols = list(range(0, n, 8))
    sub = np.ix_(rows, cols)
    case = {
        "name": name,
        "source": source,
        "dt": dt,
        "dj": DJ,
        "s0": s0,
        "J": J,
        "n_scales": J + 1,
        "omega0": OMEGA0,
        "N": n,
        "fft_length": 1 << math.ceil(math.log2(n)),
        "t": t.tolist(),
        "y": y.tolist(),
        "mean": mean,
        "std": std,
        "alpha": float(alpha),
        "ar1_noise_amplitude": float(ar1_a),
        "ar1_mu2": float(ar1_mu2),
        "scales": scales.tolist(),
        "periods": (1 / freqs).tolist(),
        "coi": coi.tolist(),
        "global_power": global_power.tolist(),
        "red_noise_spectrum": red.tolist(),
        "signif": signif.tolist(),
        "global_signif_dof": dof.tolist(),
        "global_signif": global_signif.tolist(),
        "power_rows": rows,
        "power_cols": cols,
        "power": power[sub].tolist(),
    }
    if wave_parts:
        case["wave_re"] = wave.real[sub].tolist()
        case["wave_im"] = wave.imag[sub].tolist()
    return case


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    out = Path(ap.parse_args().out).resolve()
    assert pycwt.helpers.fft.__name__ == "scipy.fftpack", "pyfftw must not be installed"
    j7 = int(7 / DJ)
    assert j7 == 84

    cases = []
    # a. 24 h sine in noise.
    rng = np.random.default_rng(20240601)
    t = np.arange(240) * 1.0
    y = np.sin(2 * np.pi * t / 24) + 0.4 * rng.standard_normal(t.size)
    cases.append(analyse("sine_24h_noise", t, y, 1.0, j7, "synthetic, seed 20240601",
                         wave_parts=True))

    # b. Chirp: P(t) = P0 + (P1 - P0) t / T, phase = 2 pi int_0^t ds / P(s).
    rng = np.random.default_rng(20240602)
    t = np.arange(480) * 1.0
    p0, p1, big_t = 24.0, 20.0, t[-1]
    k = (p1 - p0) / big_t
    phase = 2 * np.pi * np.log((p0 + k * t) / p0) / k
    y = np.sin(phase) + 0.2 * rng.standard_normal(t.size)
    cases.append(analyse("drift_24_to_20h", t, y, 1.0, j7,
                         "synthetic, seed 20240602; y = sin(2 pi ln(P(t)/24)/k) + 0.2 N(0,1), "
                         "P(t) = 24 + k t, k = -4/479 per hour"))

    # c. Real hourly temperatures (repository file, regular and gap-free).
    data = np.loadtxt(ROOT / TEMPERATURE_CSV, delimiter=",", skiprows=1)
    data = data[:336]
    assert np.all(np.diff(data[:, 0]) == 1.0) and np.all(np.isfinite(data))
    cases.append(analyse("real_temperature", data[:, 0].copy(), data[:, 1].copy(), 1.0, j7,
                         f"{TEMPERATURE_CSV}: first 336 data rows (file lines 2-337), "
                         "t_hours 0..335, temperature_kelvin; TMY3 Greensboro NC, July"))

    # d. Short, not a power of two, dt = 0.5.
    rng = np.random.default_rng(20240604)
    t = np.arange(100) * 0.5
    y = np.cos(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(t.size)
    cases.append(analyse("short_n100", t, y, 0.5, 67, "synthetic, seed 20240604"))

    doc = {
        "generator": "scripts/reference/wavelet_reference.py",
        "pycwt_version": importlib.metadata.version("pycwt"),
        "pycwt_module_version": pycwt.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "fft_backend": pycwt.helpers.fft.__name__,
        "workflow": "y_norm = (y - mean)/std(ddof=0); alpha = ar1(y_norm)[0]; "
                    "cwt(y_norm, dt, dj, s0=2dt, J, Morlet(6)); power = |wave|^2; "
                    "global_power = power.mean(axis=1); signif = significance(1.0, dt, scales, 0, "
                    "alpha, 0.95); global_signif = significance(1.0, dt, scales, 1, alpha, 0.95, "
                    "dof=N - scales)",
        "power_layout": "power[i][j] = |wave[power_rows[i], power_cols[j]]|^2",
        "note": "docs/notes/pycwt_algorithm.md",
        "cases": cases,
    }
    text = json.dumps(doc, indent=1, allow_nan=False)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    for c in cases:
        gp = np.array(c["global_power"])
        k = int(np.argmax(gp))
        print(f"{c['name']}: N={c['N']} alpha={c['alpha']:.4f} global peak at period "
              f"{c['periods'][k]:.2f} (power {gp[k]:.2f}, 95% level {c['global_signif'][k]:.2f})")
    print(f"wrote {out} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
