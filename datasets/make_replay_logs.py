#!/usr/bin/env python3
"""Builds the sensor replay logs in datasets/ from public weather records, and checks them.

    $(./scripts/pyenv.sh) datasets/make_replay_logs.py            # regenerate every file, then check
    $(./scripts/pyenv.sh) datasets/make_replay_logs.py --check    # only check the committed files
    ... --data DIR   # where the source records live (default ../shared/data beside the clone)

Outputs (byte-identical on every run: fixed seeds, numpy + standard library only):
  greensboro-field.csv   3 BME280 nodes, 5 min, July (TMY3 Greensboro NC, NREL NSRDB via pvlib 0.16.1)
  pacific-coast.jsonl    2 temperature nodes, 10 min, 21 days of June 2010 (vega_datasets 0.9.0)
  chamber-cycle.csv      synthetic growth chamber: 24 h cycle vs constant 30 °C, 12 days
  manifest.json          expected counts, the line of every injected fault, outage window, checksums

The checker (run after generating, or alone with --check) re-reads the files with its own parser,
validates every line against the reading rules, and compares what it finds with manifest.json.
See datasets/README.md for the record format and the list of injected faults.
"""
import argparse
import csv
import hashlib
import io
import json
import math
import re
import string
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

CSV_HEADER = ("node_id,seq,timestamp,temperature_kelvin,humidity_percent,pressure_pa,"
              "light_lux,sensor_type,quality")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS_PER_DAY = 86_400_000

GSO_FILE = "greensboro-field.csv"
PAC_FILE = "pacific-coast.jsonl"
CHAMBER_FILE = "chamber-cycle.csv"
MANIFEST = "manifest.json"

# Rules every valid reading satisfies (the server's validation; the checker applies them).
KELVIN_MIN, KELVIN_MAX = 273.15, 323.15
HUMIDITY_MIN, HUMIDITY_MAX = 0.0, 100.0
PRESSURE_MIN, PRESSURE_MAX = 30_000.0, 110_000.0
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QUALITIES = ("good", "fair", "poor", "invalid")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def ms_of(dt):
    return (dt - EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms):
    """RFC 3339 UTC, millisecond precision, Z suffix."""
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def fixed(value, decimals):
    """Exact decimal text of round(value, decimals), via integers (no float formatting drift)."""
    scale = 10 ** decimals
    n = int(round(value * scale))
    sign = "-" if n < 0 else ""
    n = abs(n)
    return f"{sign}{n // scale}.{n % scale:0{decimals}d}"


def pchip(x, y, xq):
    """Monotone piecewise-cubic Hermite interpolation (Fritsch-Carlson / Fritsch-Butland slopes,
    the same scheme as scipy.interpolate.PchipInterpolator); xq is clamped to [x0, xn]."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    xq = np.clip(np.asarray(xq, float), x[0], x[-1])
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.zeros_like(y)
    h0, h1, m0, m1 = h[:-1], h[1:], m[:-1], m[1:]
    w1, w2 = 2 * h1 + h0, h1 + 2 * h0
    same = (np.sign(m0) * np.sign(m1)) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harm = (w1 + w2) / (w1 / m0 + w2 / m1)
    d[1:-1] = np.where(same, harm, 0.0)

    def edge(ha, hb, ma, mb):
        e = ((2 * ha + hb) * ma - ha * mb) / (ha + hb)
        if np.sign(e) != np.sign(ma):
            return 0.0
        if np.sign(ma) != np.sign(mb) and abs(e) > 3 * abs(ma):
            return 3 * ma
        return e

    d[0] = edge(h[0], h[1], m[0], m[1])
    d[-1] = edge(h[-1], h[-2], m[-1], m[-2])
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    t = (xq - x[i]) / h[i]
    hi = h[i]
    return ((1 + 2 * t) * (1 - t) ** 2 * y[i] + t * (1 - t) ** 2 * hi * d[i]
            + t * t * (3 - 2 * t) * y[i + 1] + t * t * (t - 1) * hi * d[i + 1])


def ou(rng, n, dt_s, sigma, tau_s):
    """Stationary Ornstein-Uhlenbeck series (AR(1)) of n samples, stationary std sigma."""
    a = math.exp(-dt_s / tau_s)
    b = sigma * math.sqrt(1 - a * a)
    eps = rng.standard_normal(n)
    out = np.empty(n)
    v = sigma * eps[0]
    for k in range(n):
        if k:
            v = a * v + b * eps[k]
        out[k] = v
    return out


def lag(x, dt_s, tau_s):
    """First-order lag (thermal inertia) of a sampled series."""
    a = 1 - math.exp(-dt_s / tau_s)
    out = np.empty_like(x)
    v = x[0]
    for k in range(len(x)):
        v += a * (x[k] - v)
        out[k] = v
    return out


def e_sat(t_c):
    """Saturation vapour pressure over water (Magnus), hPa."""
    return 6.112 * np.exp(17.62 * t_c / (243.12 + t_c))


def rng_for(*key):
    return np.random.default_rng([20250701, *key])


def garbage(rng, n, forbidden):
    """A line of printable ASCII noise (what a UART at the wrong baud rate produces), no NUL."""
    pool = [c for c in string.printable if c not in string.whitespace and c not in forbidden]
    first_pool = [c for c in pool if c in "!$%&*+:;<=>?@^`|~"]
    chars = [first_pool[int(rng.integers(len(first_pool)))]]
    chars += [pool[int(rng.integers(len(pool)))] for _ in range(n - 1)]
    return "".join(chars)


# --------------------------------------------------------------------------------------------
# readings -> text
# --------------------------------------------------------------------------------------------

class Reading:
    """One reading as the node sent it; values kept as exact decimal text."""
    __slots__ = ("node", "seq", "ts_ms", "arr_ms", "k", "kelvin", "rh", "pa", "lux",
                 "sensor", "quality", "raw", "lost", "backfill")

    def __init__(self, node, seq, ts_ms, arr_ms, k, kelvin, rh=None, pa=None, lux=None,
                 sensor="BME280", quality="good", raw=False):
        self.node, self.seq, self.ts_ms, self.arr_ms, self.k = node, seq, ts_ms, arr_ms, k
        self.kelvin = fixed(kelvin, 3)
        self.rh = None if rh is None else fixed(rh, 2)
        self.pa = None if pa is None else fixed(pa, 1)
        self.lux = None if lux is None else fixed(lux, 1)
        self.sensor, self.quality, self.raw = sensor, quality, raw
        self.lost = False        # sent, but lost in transit (seq gap)
        self.backfill = False    # buffered during the outage, sent late

    def fields(self):
        return {"node_id": self.node, "seq": str(self.seq), "timestamp": iso_ms(self.ts_ms),
                "temperature_kelvin": self.kelvin, "humidity_percent": self.rh,
                "pressure_pa": self.pa, "light_lux": self.lux, "sensor_type": self.sensor,
                "quality": self.quality}


CSV_COLS = CSV_HEADER.split(",")


def csv_line(f):
    return ",".join("" if f.get(c) is None else f[c] for c in CSV_COLS)


def milli_celsius_text(kelvin_text):
    """°C text for a kelvin text with 3 decimals, exact: K - 273.15."""
    whole, frac = kelvin_text.split(".")
    mk = int(whole) * 1000 + int(frac.ljust(3, "0")) * (1 if not whole.startswith("-") else -1)
    mc = mk - 273_150
    sign = "-" if mc < 0 else ""
    mc = abs(mc)
    return f"{sign}{mc // 1000}.{mc % 1000:03d}"


NUMERIC = ("temperature_kelvin", "humidity_percent", "pressure_pa", "light_lux")
JSON_ORDER = ("node_id", "seq", "timestamp", "temperature_kelvin", "humidity_percent",
              "pressure_pa", "light_lux", "sensor_type", "quality", "raw_values")


def json_line(f, raw=None):
    """One JSON object, compact, keys in interface order, absent keys omitted, numbers written as
    their exact decimal text. f values: str (or None = absent); '__str__:' prefix forces a JSON
    string for a numeric field (used for the 'warm' fault)."""
    parts = []
    for key in JSON_ORDER:
        if key == "raw_values":
            if raw:
                inner = ",".join(f'"{k}":{v}' for k, v in raw.items())
                parts.append(f'"raw_values":{{{inner}}}')
            continue
        v = f.get(key)
        if v is None:
            continue
        if isinstance(v, str) and v.startswith("__str__:"):
            parts.append(f"{json.dumps(key)}:{json.dumps(v[8:])}")
        elif key in NUMERIC or key == "seq":
            parts.append(f"{json.dumps(key)}:{v}")
        else:
            parts.append(f"{json.dumps(key)}:{json.dumps(v)}")
    return "{" + ",".join(parts) + "}"


def raw_of(f):
    if f.get("temperature_kelvin") is None:
        return None
    try:
        return {"temperature": milli_celsius_text(f["temperature_kelvin"])}
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# assembling a log: arrival order, lost readings, corrupted lines, duplicates
# --------------------------------------------------------------------------------------------

def assemble(readings, fault_makers, dup_gaps, rng, protected=lambda r: False):
    """readings: every reading the nodes sent, in arrival order, with a `lost` flag set on the
    ones lost in transit. fault_makers: list of (reason, fn(reading) -> text); each turns one
    sent-but-lost reading into a malformed line at that reading's arrival position (it carries
    that reading's seq, so it never collides with a valid reading). dup_gaps: for each duplicate,
    how many lines later the retransmitted copy arrives. Returns the list of entries."""
    n = len(readings)
    entries = []
    # choose the readings that arrive corrupted: evenly spread through the file
    order = list(range(len(fault_makers)))
    rng.shuffle(order)
    corrupt = {}
    for slot, which in enumerate(order):
        j = int(n * (slot + 0.5) / len(fault_makers))
        while readings[j].lost or protected(readings[j]) or j in corrupt:
            j += 1
        corrupt[j] = fault_makers[which]
    for j, r in enumerate(readings):
        if j in corrupt:
            reason, fn = corrupt[j]
            entries.append({"kind": "bad", "reason": reason, "text": fn(r), "reading": r})
        elif not r.lost:
            entries.append({"kind": "valid", "reading": r})
    # duplicates: a valid reading retransmitted a few lines later (same bytes)
    for slot, gap in enumerate(dup_gaps):
        i = int(len(entries) * (slot + 0.25) / len(dup_gaps))
        while (entries[i]["kind"] != "valid" or protected(entries[i]["reading"])
               or any(e["kind"] != "valid" or protected(e["reading"])
                      for e in entries[i + 1:i + 1 + gap])):
            i += 1
        entries.insert(i + 1 + gap, {"kind": "dup", "of": entries[i]})
    return entries


def render(entries, line_of_reading, header):
    """Returns (text, manifest fragments). Line numbers are 1-based, header is line 1."""
    lines, dups, bad = [], [], []
    first = 2 if header else 1
    pos = {}
    for idx, e in enumerate(entries):
        ln = first + idx
        pos[id(e)] = ln
        if e["kind"] == "valid":
            lines.append(line_of_reading(e["reading"]))
        elif e["kind"] == "bad":
            lines.append(e["text"])
            bad.append({"line": ln, "reason": e["reason"]})
        else:
            lines.append(lines[pos[id(e["of"])] - first])
            dups.append({"line": ln, "of_line": pos[id(e["of"])]})
    body = (CSV_HEADER + "\n" if header else "") + "".join(l + "\n" for l in lines)
    return body, lines, dups, bad, pos


def node_counts(entries, nodes):
    counts = {n: 0 for n in nodes}
    for e in entries:
        if e["kind"] == "valid":
            counts[e["reading"].node] += 1
    return counts


def quality_counts(entries):
    q = {"good": 0, "fair": 0}
    for e in entries:
        if e["kind"] == "valid":
            q[e["reading"].quality] += 1
    return q


def seq_gaps(entries, nodes, sent):
    got = {n: set() for n in nodes}
    for e in entries:
        if e["kind"] == "valid":
            got[e["reading"].node].add(e["reading"].seq)
    return {n: sent[n] - len(got[n]) for n in nodes}


# --------------------------------------------------------------------------------------------
# 1. Greensboro field nodes (TMY3 723170, July), CSV
# --------------------------------------------------------------------------------------------

GSO_NODES = {
    # temp offset K, RH offset %, pressure offset Pa, clock offset s, drift s/day, poll phase s
    "gso_field_01": dict(dt=+0.23, drh=+0.8, dpa=+37.0, off=+0.412, drift=+2.0, phase=0.8),
    "gso_field_02": dict(dt=-0.31, drh=-1.1, dpa=-64.0, off=-0.735, drift=-3.0, phase=2.3),
    "gso_roof_03": dict(dt=+0.12, drh=+0.4, dpa=+88.0, off=+1.208, drift=+1.0, phase=4.1,
                        light=True, sun_k_per_100klx=1.5),
}
GSO_T0 = datetime(2025, 7, 1, 5, 0, tzinfo=timezone.utc)   # 2025-07-01 00:00 local standard time
GSO_STEP_S = 300
GSO_N = 31 * 288
GSO_OUTAGE_NODE = "gso_field_02"
GSO_OUTAGE = (datetime(2025, 7, 16, 10, 0, tzinfo=timezone.utc),
              datetime(2025, 7, 16, 16, 0, tzinfo=timezone.utc))
GSO_RECONNECT_LEAD_S = 10.0      # node reconnects 10 s before the end of the window


def read_tmy3(path):
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    station, cols, data = rows[0], rows[1], rows[2:]
    assert float(station[3]) == -5.0, station
    col = {name: i for i, name in enumerate(cols)}
    idx = {k: col[v] for k, v in {
        "t": "Dry-bulb (C)", "rh": "RHum (%)", "p": "Pressure (mbar)",
        "lx": "GH illum (lx)", "cld": "TotCld (tenths)"}.items()}
    # the June 30 24:00 row (= July 1 00:00 LST) anchors the start, then the 744 July rows
    start = next(i for i, r in enumerate(data) if r[0].startswith("07/")) - 1
    sel = data[start:start + 745]
    assert sel[0][0].startswith("06/30/") and sel[0][1] == "24:00", sel[0][:2]
    assert all(r[0].startswith("07/") for r in sel[1:]) and sel[-1][1] == "24:00"
    out = {k: np.array([float(r[i]) for r in sel]) for k, i in idx.items()}
    # The illuminance fields of this file are stored in units of 100 lx (noon values ~1000 for
    # ~900 W/m2 GHI; ratio ~107 lm/W in every month), so scale to lux.
    out["lx"] = out["lx"] * 100.0
    return out


def build_greensboro(data_dir):
    w = read_tmy3(data_dir / "723170TYA.CSV")
    knots_h = np.arange(745, dtype=float)          # hours after GSO_T0 (hour-ending stamps)
    illum_h = knots_h - 0.5                         # illuminance: mean over the hour -> midpoint
    t0_ms = ms_of(GSO_T0)
    out_lo, out_hi = ms_of(GSO_OUTAGE[0]), ms_of(GSO_OUTAGE[1])
    sent = {}
    readings = []
    env_rng = rng_for(1, 0)
    k_idx = np.arange(GSO_N)
    nominal_h = k_idx * GSO_STEP_S / 3600.0
    # shared sub-hour weather (same air for all three nodes): temperature, humidity, pressure,
    # cloud flicker of the light
    env_t = ou(env_rng, GSO_N, GSO_STEP_S, 0.12, 20 * 60)
    env_rh = ou(env_rng, GSO_N, GSO_STEP_S, 0.6, 30 * 60)
    env_p = ou(env_rng, GSO_N, GSO_STEP_S, 4.0, 3600)
    flicker = ou(env_rng, GSO_N, GSO_STEP_S, 1.0, 15 * 60)
    cloud = np.clip(pchip(knots_h, w["cld"], nominal_h) / 10.0, 0, 1)
    # broken cloud flickers most; cloud-edge enhancement is capped at +30 %
    rel_sigma = 0.02 + 0.13 * 4 * cloud * (1 - cloud)
    lux_true = np.clip(pchip(illum_h, w["lx"], nominal_h), 0, None) * np.clip(
        np.exp(rel_sigma * flicker - 0.5 * rel_sigma ** 2), 0.4, 1.3)
    temp_c = pchip(knots_h, w["t"], nominal_h) + env_t
    rh_env = pchip(knots_h, w["rh"], nominal_h) + env_rh
    pa_env = pchip(knots_h, w["p"] * 100.0, nominal_h) + env_p

    for ni, (node, cfg) in enumerate(GSO_NODES.items()):
        rng = rng_for(1, ni + 1)
        jitter = rng.uniform(0.0, 0.25, GSO_N)
        t_true_s = k_idx * GSO_STEP_S + cfg["phase"] + jitter            # since GSO_T0
        latency = rng.uniform(0.03, 0.6, GSO_N)
        local = ou(rng, GSO_N, GSO_STEP_S, 0.08, 30 * 60)
        tc = temp_c + local
        if cfg.get("light"):
            excess = lag(cfg["sun_k_per_100klx"] * lux_true / 100_000.0, GSO_STEP_S, 600)
        else:
            excess = np.zeros(GSO_N)
        # the sun-warmed housing lowers relative humidity at constant vapour pressure
        rh_node = rh_env * e_sat(tc) / e_sat(tc + excess)
        kelvin = tc + excess + 273.15 + cfg["dt"] + rng.normal(0, 0.05, GSO_N)
        rh = np.clip(rh_node + cfg["drh"] + rng.normal(0, 0.5, GSO_N), 0.0, 100.0)
        pa = pa_env + cfg["dpa"] + rng.normal(0, 10.0, GSO_N)
        lux = (np.clip(lux_true * (1 + rng.normal(0, 0.01, GSO_N)), 0, None)
               if cfg.get("light") else None)
        lost = rng.random(GSO_N) < 0.005
        fair = rng.random(GSO_N) < 0.002
        backlog = []
        for k in range(GSO_N):
            true_ms = t0_ms + int(round(t_true_s[k] * 1000))
            ts_ms = true_ms + int(round((cfg["off"] + cfg["drift"] * t_true_s[k] / 86400) * 1000))
            arr_ms = true_ms + int(round(latency[k] * 1000))
            in_outage = node == GSO_OUTAGE_NODE and out_lo <= t0_ms + k * GSO_STEP_S * 1000 < out_hi
            r = Reading(node, k + 1, ts_ms, arr_ms, k, kelvin[k], rh[k], pa[k],
                        None if lux is None else lux[k], quality="fair" if fair[k] else "good")
            r.lost = bool(lost[k]) and not in_outage
            r.backfill = in_outage
            if in_outage:
                backlog.append(r)
            readings.append(r)
        if backlog:
            # back-fill: sent in order right after reconnecting, before the next live reading
            rec_ms = out_hi - int(GSO_RECONNECT_LEAD_S * 1000)
            for i, r in enumerate(backlog):
                r.arr_ms = rec_ms + 120 + 40 * i
        sent[node] = GSO_N
    readings.sort(key=lambda r: (r.arr_ms, r.node))
    return readings, sent, w


def gso_faults(rng):
    def mk(fn):
        return lambda r: csv_line(fn(dict(r.fields())))

    def setf(**kv):
        def fn(f):
            f.update(kv)
            return f
        return fn

    def no_zone(f):
        f["timestamp"] = f["timestamp"][:16].replace("T", " ")     # 2025-07-10 12:00
        return f

    def future(f):
        f["timestamp"] = "2099" + f["timestamp"][4:]
        return f

    def truncated(r):
        full = csv_line(r.fields())
        return full[:len(r.node) + len(str(r.seq)) + 2 + 16]     # cut inside the timestamp

    def extra_column(r):
        return csv_line(r.fields()) + ",3.31"                     # battery volts, newer firmware

    junk = garbage(rng, 57, forbidden=',"#')
    return [
        ("PARSE_ERROR", truncated),
        ("PARSE_ERROR", mk(setf(temperature_kelvin="warm"))),
        ("PARSE_ERROR", extra_column),
        ("PARSE_ERROR", lambda r: junk),
        ("MISSING_FIELD", mk(setf(node_id=""))),
        ("MISSING_FIELD", mk(setf(timestamp=""))),
        ("MISSING_FIELD", mk(setf(temperature_kelvin=""))),
        ("INVALID_NODE_ID", mk(lambda f: {**f, "node_id": f["node_id"].replace("_", "@", 1)})),
        ("INVALID_TIMESTAMP", mk(no_zone)),
        ("TEMPERATURE_OUT_OF_RANGE", mk(setf(temperature_kelvin="400.0"))),
        ("TEMPERATURE_OUT_OF_RANGE", mk(setf(temperature_kelvin="250.0"))),
        ("HUMIDITY_OUT_OF_RANGE", mk(setf(humidity_percent="104.5"))),
        ("PRESSURE_OUT_OF_RANGE", mk(setf(pressure_pa="12000.0"))),
        ("SENSOR_INVALID", mk(setf(quality="invalid"))),
        ("FUTURE_TIMESTAMP", mk(future)),
    ]


# --------------------------------------------------------------------------------------------
# 2. Pacific coast temperature nodes (vega_datasets seattle/sf 2010), JSONL
# --------------------------------------------------------------------------------------------

PAC_T0 = datetime(2010, 6, 1, tzinfo=timezone.utc)
PAC_DAYS = 21
PAC_STEP_S = 600
PAC_N = PAC_DAYS * 144
PAC_NODES = {
    "sea_pico_01": dict(src="seattle-temps.csv", dt=+0.21, off=-0.318, drift=+2.5, phase=0.6),
    "sfo_elm11_01": dict(src="sf-temps.csv", dt=-0.34, off=+0.874, drift=-1.5, phase=1.9),
}


def read_vega_temps(path):
    """{hour datetime (taken as UTC): °F} from a vega_datasets temps file (either column order)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        d = r["date"].strip()
        fmt = "%Y/%m/%d %H:%M:%S" if d.count(":") == 2 else "%Y/%m/%d %H:%M"
        out[datetime.strptime(d, fmt).replace(tzinfo=timezone.utc)] = float(r["temp"])
    return out


def build_pacific(data_dir):
    readings, sent = [], {}
    t0_ms = ms_of(PAC_T0)
    k_idx = np.arange(PAC_N)
    for ni, (node, cfg) in enumerate(PAC_NODES.items()):
        temps = read_vega_temps(data_dir / cfg["src"])
        hours = [PAC_T0 + timedelta(hours=j) for j in range(PAC_DAYS * 24 + 1)]
        missing = [h for h in hours if h not in temps]
        assert not missing, f"{cfg['src']}: hours missing in the window: {missing[:3]}"
        kelvin_h = np.array([(temps[h] - 32.0) * 5.0 / 9.0 + 273.15 for h in hours])
        rng = rng_for(2, ni + 1)
        jitter = rng.uniform(0.0, 0.25, PAC_N)
        t_true_s = k_idx * PAC_STEP_S + cfg["phase"] + jitter
        latency = rng.uniform(0.03, 0.9, PAC_N)
        kelvin = (pchip(np.arange(len(hours), dtype=float), kelvin_h, t_true_s / 3600.0)
                  + ou(rng, PAC_N, PAC_STEP_S, 0.08, 30 * 60) + cfg["dt"]
                  + rng.normal(0, 0.05, PAC_N))
        lost = rng.random(PAC_N) < 0.003
        fair = rng.random(PAC_N) < 0.002
        for k in range(PAC_N):
            true_ms = t0_ms + int(round(t_true_s[k] * 1000))
            ts_ms = true_ms + int(round((cfg["off"] + cfg["drift"] * t_true_s[k] / 86400) * 1000))
            r = Reading(node, k + 1, ts_ms, true_ms + int(round(latency[k] * 1000)), k,
                        kelvin[k], quality="fair" if fair[k] else "good", raw=True)
            r.lost = bool(lost[k])
            readings.append(r)
        sent[node] = PAC_N
    readings.sort(key=lambda r: (r.arr_ms, r.node))
    return readings, sent


def pac_line(r):
    f = r.fields()
    return json_line(f, raw_of(f))


def pac_faults(rng):
    def mk(fn, keep_raw=True):
        def make(r):
            f = dict(r.fields())
            raw = raw_of(f) if keep_raw else None
            f = fn(f)
            if keep_raw:
                raw = raw_of(f)
            return json_line(f, raw)
        return make

    def setf(**kv):
        def fn(f):
            f.update(kv)
            return f
        return fn

    def drop(key):
        def fn(f):
            f[key] = None
            return f
        return fn

    def truncated(r):
        full = pac_line(r)
        return full[:int(len(full) * 0.6)]

    def missing_comma(r):
        return pac_line(r).replace(',"timestamp"', ' "timestamp"', 1)

    long_id = ("sea_pico_01_greenhouse-bench-north-row-a-" + "x" * 70)[:70]
    junk = garbage(rng, 63, forbidden='{}[]"\\')
    return [
        ("PARSE_ERROR", truncated),
        ("PARSE_ERROR", missing_comma),
        ("PARSE_ERROR", mk(setf(temperature_kelvin="__str__:warm"), keep_raw=False)),
        ("PARSE_ERROR", lambda r: junk),
        ("MISSING_FIELD", mk(drop("node_id"))),
        ("MISSING_FIELD", mk(drop("temperature_kelvin"), keep_raw=False)),
        ("INVALID_NODE_ID", mk(setf(node_id="pico@001"))),
        ("INVALID_NODE_ID", mk(setf(node_id=long_id))),
        ("INVALID_TIMESTAMP", mk(setf(timestamp="yesterday"))),
        ("TEMPERATURE_OUT_OF_RANGE", mk(setf(temperature_kelvin="400.0"))),
        ("TEMPERATURE_OUT_OF_RANGE", mk(setf(temperature_kelvin="250.0"))),
        ("HUMIDITY_OUT_OF_RANGE", mk(setf(humidity_percent="104.5"))),
        ("PRESSURE_OUT_OF_RANGE", mk(setf(pressure_pa="12000.0"))),
        ("SENSOR_INVALID", mk(setf(quality="invalid"))),
        ("FUTURE_TIMESTAMP", mk(lambda f: {**f, "timestamp": "2099" + f["timestamp"][4:]})),
    ]


# --------------------------------------------------------------------------------------------
# 3. Growth chamber (synthetic), CSV
# --------------------------------------------------------------------------------------------

CHAMBER_T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
CHAMBER_DAYS = 12
CHAMBER_STEP_S = 600
CHAMBER_N = CHAMBER_DAYS * 144
CHAMBER_NODES = ("chamber_cycle", "chamber_const")


def build_chamber():
    t0_ms = ms_of(CHAMBER_T0)
    t_h = np.arange(CHAMBER_N) * CHAMBER_STEP_S / 3600.0
    readings = []
    for ni, node in enumerate(CHAMBER_NODES):
        rng = rng_for(3, ni + 1)
        if node == "chamber_cycle":
            mean_k = 303.15 - 5.0 * np.cos(2 * np.pi * t_h / 24.0)    # minimum at 00:00 UTC
        else:
            mean_k = np.full(CHAMBER_N, 303.15)
        kelvin = mean_k + rng.normal(0, 0.02, CHAMBER_N)
        rh = 60.0 + rng.normal(0, 0.3, CHAMBER_N)
        pa = 101_325.0 + rng.normal(0, 10.0, CHAMBER_N)
        for k in range(CHAMBER_N):
            ms = t0_ms + k * CHAMBER_STEP_S * 1000
            readings.append(Reading(node, k + 1, ms, ms + ni, k, kelvin[k], rh[k], pa[k]))
    readings.sort(key=lambda r: (r.arr_ms, r.node))
    return readings


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(data_dir, out_dir):
    files = []

    # 1. Greensboro
    readings, sent, _ = build_greensboro(data_dir)
    entries = assemble(readings, gso_faults(rng_for(1, 99)), [1, 2, 1, 7, 2], rng_for(1, 98),
                       protected=lambda r: r.backfill)
    body, lines, dups, bad, pos = render(entries, lambda r: csv_line(r.fields()), header=True)
    path = out_dir / GSO_FILE
    path.write_text(body, encoding="ascii", newline="\n")
    back = [pos[id(e)] for e in entries if e["kind"] == "valid" and e["reading"].backfill]
    assert back == list(range(back[0], back[0] + len(back))), "back-fill must be contiguous"
    back_ts = [e["reading"].ts_ms for e in entries if e["kind"] == "valid" and e["reading"].backfill]
    counts = node_counts(entries, GSO_NODES)
    files.append({
        "path": f"datasets/{GSO_FILE}",
        "format": "csv",
        "header": True,
        "lines": len(lines),
        "nodes": counts,
        "valid_readings": sum(counts.values()),
        "quality": quality_counts(entries),
        "duplicates": dups,
        "malformed": bad,
        "out_of_order_across_nodes": True,
        "outage": {
            "node_id": GSO_OUTAGE_NODE,
            "start": iso_ms(ms_of(GSO_OUTAGE[0])),
            "end": iso_ms(ms_of(GSO_OUTAGE[1])),
            "backfill_readings": len(back),
            "backfill_first_line": back[0],
            "backfill_last_line": back[-1],
            "backfill_first_timestamp": iso_ms(back_ts[0]),
            "backfill_last_timestamp": iso_ms(back_ts[-1]),
        },
        "interval_seconds": GSO_STEP_S,
        "readings_sent_per_node": sent,
        "seq_gaps": seq_gaps(entries, GSO_NODES, sent),
        "clock": {n: {"offset_s": c["off"], "drift_s_per_day": c["drift"]}
                  for n, c in GSO_NODES.items()},
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    })

    # 2. Pacific coast
    readings, sent = build_pacific(data_dir)
    entries = assemble(readings, pac_faults(rng_for(2, 99)), [1, 1, 3, 1, 2], rng_for(2, 98))
    body, lines, dups, bad, pos = render(entries, pac_line, header=False)
    path = out_dir / PAC_FILE
    path.write_text(body, encoding="ascii", newline="\n")
    counts = node_counts(entries, PAC_NODES)
    files.append({
        "path": f"datasets/{PAC_FILE}",
        "format": "jsonl",
        "header": False,
        "lines": len(lines),
        "nodes": counts,
        "valid_readings": sum(counts.values()),
        "quality": quality_counts(entries),
        "duplicates": dups,
        "malformed": bad,
        "out_of_order_across_nodes": False,
        "interval_seconds": PAC_STEP_S,
        "readings_sent_per_node": sent,
        "seq_gaps": seq_gaps(entries, PAC_NODES, sent),
        "clock": {n: {"offset_s": c["off"], "drift_s_per_day": c["drift"]}
                  for n, c in PAC_NODES.items()},
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    })

    # 3. Chamber
    readings = build_chamber()
    entries = [{"kind": "valid", "reading": r} for r in readings]
    body, lines, dups, bad, pos = render(entries, lambda r: csv_line(r.fields()), header=True)
    path = out_dir / CHAMBER_FILE
    path.write_text(body, encoding="ascii", newline="\n")
    counts = node_counts(entries, CHAMBER_NODES)
    files.append({
        "path": f"datasets/{CHAMBER_FILE}",
        "format": "csv",
        "header": True,
        "lines": len(lines),
        "nodes": counts,
        "valid_readings": sum(counts.values()),
        "quality": quality_counts(entries),
        "duplicates": [],
        "malformed": [],
        "out_of_order_across_nodes": False,
        "interval_seconds": CHAMBER_STEP_S,
        "intended_period_hours": {"chamber_cycle": 24.0, "chamber_const": "free-running"},
        "temperature_program": {
            "chamber_cycle": "303.15 - 5.0*cos(2*pi*t/24h) K, t from 00:00 UTC (minimum 298.15 K "
                             "at 00:00 UTC, maximum 308.15 K at 12:00 UTC), noise sigma 0.02 K",
            "chamber_const": "303.15 K constant, noise sigma 0.02 K",
        },
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    })

    for f in files:
        assert f["valid_readings"] + len(f["duplicates"]) + len(f["malformed"]) == f["lines"]
    manifest = {
        "generator": "datasets/make_replay_logs.py",
        "command": "$(./scripts/pyenv.sh) datasets/make_replay_logs.py",
        "line_numbers": "1-based; in CSV files the header is line 1",
        "files": files,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="ascii",
                                    newline="\n")
    for f in files:
        print(f"wrote {f['path']}: {f['lines']} lines, {f['valid_readings']} valid, "
              f"{len(f['duplicates'])} duplicates, {len(f['malformed'])} malformed, "
              f"{f['bytes']} bytes")


# --------------------------------------------------------------------------------------------
# independent check: re-read the files, apply the rules, compare with the manifest
# --------------------------------------------------------------------------------------------

TS_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
OUR_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DEC = {"temperature_kelvin": 3, "humidity_percent": 3, "pressure_pa": 1, "light_lux": 1}
NUM_TEXT_RE = re.compile(r"^-?\d+(\.\d+)?$")


def parse_rfc3339(s):
    m = TS_RE.match(s)
    if not m:
        return None
    y, mo, d, h, mi, se = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    try:
        dt = datetime(y, mo, d, h, mi, se, tzinfo=timezone.utc)
    except ValueError:
        return None
    z = m.group(8)
    if z != "Z":
        sign = 1 if z[0] == "+" else -1
        dt -= sign * timedelta(hours=int(z[1:3]), minutes=int(z[4:6]))
    return dt + timedelta(microseconds=int((frac[1:] + "000000")[:6]) if frac else 0)


class ParseError(Exception):
    pass


def rec_from_csv(line):
    cols = next(csv.reader(io.StringIO(line)))
    if len(cols) != 9:
        raise ParseError(f"{len(cols)} columns")
    rec = dict(zip(CSV_COLS, cols))
    out = {}
    for key, v in rec.items():
        if key in NUMERIC:
            if v == "":
                out[key] = None
                continue
            if not NUM_TEXT_RE.match(v):
                raise ParseError(f"{key}={v!r} is not a number")
            out[key] = float(v)
            out["_text_" + key] = v
        elif key == "seq":
            if not re.fullmatch(r"\d+", v):
                raise ParseError(f"seq={v!r}")
            out[key] = int(v)
        else:
            out[key] = v if v != "" else None
    return out


def rec_from_json(line):
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ParseError(str(e))
    if not isinstance(obj, dict):
        raise ParseError("not an object")
    unknown = set(obj) - set(JSON_ORDER)
    if unknown:
        raise ParseError(f"unknown keys {unknown}")
    if list(obj) != [k for k in JSON_ORDER if k in obj]:
        raise ParseError("key order")
    out = {}
    for key in JSON_ORDER:
        v = obj.get(key)
        if v is None:
            if key in obj:
                raise ParseError(f"{key} is null")      # we never write null
            out[key] = None
            continue
        if key in NUMERIC:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParseError(f"{key}={v!r} is not a number")
            out[key] = float(v)
            m = re.search(r'"%s":(-?[0-9.]+)' % key, line)
            out["_text_" + key] = m.group(1)
        elif key == "seq":
            if isinstance(v, bool) or not isinstance(v, int):
                raise ParseError(f"seq={v!r}")
            out[key] = v
        elif key == "raw_values":
            if not isinstance(v, dict) or not all(
                    k in ("temperature", "humidity", "pressure") and isinstance(x, (int, float))
                    for k, x in v.items()):
                raise ParseError("raw_values")
            out[key] = v
        else:
            if not isinstance(v, str):
                raise ParseError(f"{key} is not a string")
            out[key] = v
    return out


def violations(rec, now):
    """Every rule this parsed record breaks (empty set = valid reading)."""
    v = set()
    if rec["node_id"] is None or rec["timestamp"] is None or rec["temperature_kelvin"] is None:
        v.add("MISSING_FIELD")
    if rec["node_id"] is not None and not NODE_ID_RE.match(rec["node_id"]):
        v.add("INVALID_NODE_ID")
    ts = None
    if rec["timestamp"] is not None:
        ts = parse_rfc3339(rec["timestamp"])
        if ts is None:
            v.add("INVALID_TIMESTAMP")
        elif ts > now:
            v.add("FUTURE_TIMESTAMP")
    t = rec["temperature_kelvin"]
    if t is not None and not (KELVIN_MIN <= t <= KELVIN_MAX):
        v.add("TEMPERATURE_OUT_OF_RANGE")
    h = rec["humidity_percent"]
    if h is not None and not (HUMIDITY_MIN <= h <= HUMIDITY_MAX):
        v.add("HUMIDITY_OUT_OF_RANGE")
    p = rec["pressure_pa"]
    if p is not None and not (PRESSURE_MIN <= p <= PRESSURE_MAX):
        v.add("PRESSURE_OUT_OF_RANGE")
    if rec["quality"] == "invalid":
        v.add("SENSOR_INVALID")
    elif rec["quality"] not in QUALITIES:
        v.add("PARSE_ERROR")
    if rec["seq"] is None or rec["sensor_type"] is None or rec["quality"] is None:
        v.add("PARSE_ERROR")
    return v, ts


def check_file(out_dir, fm, now, problems):
    path = out_dir / Path(fm["path"]).name
    data = path.read_bytes()
    name = path.name

    def bad(msg):
        problems.append(f"{name}: {msg}")

    if b"\x00" in data or b"\r" in data:
        bad("NUL or CR byte")
    if not data.endswith(b"\n"):
        bad("no final newline")
    if hashlib.sha256(data).hexdigest() != fm["sha256"] or len(data) != fm["bytes"]:
        bad("sha256/bytes differ from manifest")
    text = data.decode("ascii")
    if any(c not in string.printable or c in "\x0b\x0c" for c in text):
        bad("non-printable character")
    all_lines = text.split("\n")[:-1]
    first = 1
    if fm["format"] == "csv":
        if all_lines[0] != CSV_HEADER:
            bad("header")
        all_lines = all_lines[1:]
        first = 2
    if len(all_lines) != fm["lines"]:
        bad(f"lines {len(all_lines)} != manifest {fm['lines']}")
    expect_bad = {m["line"]: m["reason"] for m in fm["malformed"]}
    expect_dup = {d["line"]: d["of_line"] for d in fm["duplicates"]}
    seen_key = {}
    counts = {}
    quality = {"good": 0, "fair": 0}
    last = {}
    found_bad, found_dup = {}, {}
    running_max = None
    behind = []
    for i, line in enumerate(all_lines):
        ln = first + i
        try:
            rec = (rec_from_csv if fm["format"] == "csv" else rec_from_json)(line)
            v, ts = violations(rec, now)
        except ParseError:
            rec, v, ts = None, {"PARSE_ERROR"}, None
        if v:
            if len(v) != 1:
                bad(f"line {ln} breaks several rules {sorted(v)}")
            found_bad[ln] = "+".join(sorted(v))
            if ln not in expect_bad:
                bad(f"line {ln} unexpectedly invalid {sorted(v)}: {line[:80]}")
            continue
        key = (rec["node_id"], rec["seq"])
        if key in seen_key:
            found_dup[ln] = seen_key[key][0]
            if line != seen_key[key][1]:
                bad(f"line {ln} repeats {key} but is not byte-identical")
            continue
        seen_key[key] = (ln, line)
        # a valid unique reading: format, per-node order, cross-node arrival order
        if not OUR_TS_RE.match(rec["timestamp"]):
            bad(f"line {ln} timestamp format {rec['timestamp']}")
        for fld, dec in DEC.items():
            t = rec.get("_text_" + fld)
            if t is not None and len(t.split(".")[1] if "." in t else "") > dec:
                bad(f"line {ln} {fld} has too many decimals: {t}")
        if rec["light_lux"] is not None and rec["light_lux"] < 0:
            bad(f"line {ln} negative lux")
        if rec["quality"] not in ("good", "fair"):
            bad(f"line {ln} quality {rec['quality']}")
        if fm["format"] == "jsonl":
            raw = rec["raw_values"]
            if raw is None or abs(raw["temperature"] + 273.15 - rec["temperature_kelvin"]) > 5e-4:
                bad(f"line {ln} raw_values.temperature inconsistent")
        elif "raw_values" in rec:
            bad(f"line {ln} raw_values in CSV")
        node = rec["node_id"]
        counts[node] = counts.get(node, 0) + 1
        quality[rec["quality"]] += 1
        if node in last:
            pseq, pts = last[node]
            if not (rec["seq"] > pseq and ts > pts):
                bad(f"line {ln} {node} seq/timestamp not increasing")
        last[node] = (rec["seq"], ts)
        if running_max is not None and ts < running_max - timedelta(minutes=5):
            behind.append(ln)
        running_max = ts if running_max is None else max(running_max, ts)
    for ln, reason in expect_bad.items():
        if found_bad.get(ln) != reason:
            bad(f"line {ln}: manifest says {reason}, checker finds {found_bad.get(ln)}")
    if found_dup != expect_dup:
        bad(f"duplicates differ: found {found_dup} manifest {expect_dup}")
    if counts != fm["nodes"]:
        bad(f"node counts {counts} != manifest {fm['nodes']}")
    if quality != fm["quality"]:
        bad(f"quality counts {quality} != manifest {fm['quality']}")
    if sum(counts.values()) != fm["valid_readings"]:
        bad("valid_readings")
    if fm["valid_readings"] + len(fm["duplicates"]) + len(fm["malformed"]) != fm["lines"]:
        bad("valid + duplicates + malformed != lines")
    # lines arriving far behind the newest timestamp seen: exactly the documented back-fill
    if fm.get("out_of_order_across_nodes"):
        o = fm["outage"]
        want = list(range(o["backfill_first_line"], o["backfill_last_line"] + 1))
        # every line more than 5 min behind is back-fill; the back-fill's last reading or two
        # (sampled minutes before the reconnect) lag by less than the clock spread, so allow that
        if not (set(behind) <= set(want) and len(behind) >= len(want) - 2):
            bad(f"late lines {behind[:3]}..{behind[-3:]} != back-fill {want[0]}..{want[-1]}")
        start, end = parse_rfc3339(o["start"]), parse_rfc3339(o["end"])
        node_ts = []
        for ln in want:
            rec = (rec_from_csv if fm["format"] == "csv" else rec_from_json)(all_lines[ln - first])
            if rec["node_id"] != o["node_id"]:
                bad(f"back-fill line {ln} is not {o['node_id']}")
            node_ts.append(parse_rfc3339(rec["timestamp"]))
        # the node's clock runs a few seconds per day off; allow 2 min
        if not (start - timedelta(minutes=2) <= node_ts[0] and node_ts[-1] < end):
            bad("back-fill timestamps outside the outage window")
        if len(want) != o["backfill_readings"]:
            bad("backfill_readings")
    elif behind:
        bad(f"lines behind by > 5 min without a documented outage: {behind[:5]}")
    return all_lines, first


def check_chamber(all_lines, first, problems):
    ks = {n: [] for n in CHAMBER_NODES}
    for line in all_lines:
        rec = rec_from_csv(line)
        ks[rec["node_id"]].append((parse_rfc3339(rec["timestamp"]), rec["temperature_kelvin"]))
    for node, series in ks.items():
        t = np.array([(ts - CHAMBER_T0).total_seconds() / 3600 for ts, _ in series])
        k = np.array([x for _, x in series])
        if len(k) != CHAMBER_N or not np.allclose(np.diff(t), CHAMBER_STEP_S / 3600):
            problems.append(f"chamber {node}: not a gap-free 10 min series")
        spec = np.abs(np.fft.rfft(k - k.mean()))
        if node == "chamber_cycle":
            period = len(k) * CHAMBER_STEP_S / 3600 / np.argmax(spec)
            a = np.column_stack([np.ones_like(t), np.cos(2 * np.pi * t / 24), np.sin(2 * np.pi * t / 24)])
            c = np.linalg.lstsq(a, k, rcond=None)[0]
            resid = k - a @ c
            if not (abs(period - 24) < 1e-9 and abs(c[0] - 303.15) < 0.01 and abs(c[1] + 5) < 0.01
                    and abs(c[2]) < 0.01 and 0.015 < resid.std() < 0.025):
                problems.append(f"chamber_cycle: period {period} fit {c} resid {resid.std()}")
        else:
            if not (abs(k.mean() - 303.15) < 0.005 and 0.015 < k.std() < 0.025):
                problems.append(f"chamber_const: mean {k.mean()} std {k.std()}")


def check(out_dir):
    now = datetime.now(timezone.utc)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    problems = []
    total = 0
    for fm in manifest["files"]:
        all_lines, first = check_file(out_dir, fm, now, problems)
        size = (out_dir / Path(fm["path"]).name).stat().st_size
        total += size
        if size > 3_000_000:
            problems.append(f"{fm['path']} is {size} bytes (> 3 MB)")
        if fm["path"].endswith(CHAMBER_FILE):
            check_chamber(all_lines, first, problems)
        reasons = {}
        for m in fm["malformed"]:
            reasons[m["reason"]] = reasons.get(m["reason"], 0) + 1
        print(f"checked {fm['path']}: {fm['lines']} lines, nodes {fm['nodes']}, "
              f"{len(fm['duplicates'])} duplicates, malformed {reasons}")
    if total > 8_000_000:
        problems.append(f"total {total} bytes (> 8 MB)")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the existing files")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="source records directory")
    args = ap.parse_args()
    if not args.check:
        generate(args.data, HERE)
    check(HERE)


if __name__ == "__main__":
    main()
