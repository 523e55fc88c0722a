# Build and serialise sensor readings.  Numbers are formatted from the
# driver's integer results so the JSON is identical on the Pico (32-bit
# floats) and on the unix port (64-bit floats).
import json

T_MIN_CK, T_MAX_CK = 27315, 32315  # 273.15..323.15 K, what the server accepts
P_MIN, P_MAX = 30000, 110000  # Pa
H_MIN, H_MAX = 0, 100  # %RH

KEYS = ("node_id", "seq", "timestamp", "temperature_kelvin", "humidity_percent",
        "pressure_pa", "sensor_type", "quality", "raw_values", "firmware_version")

# Reported with every reading: the server's node list shows what each node runs.
FIRMWARE_VERSION = "1.3.0"


def _fixed(n, digits):
    """Integer n scaled by 10**digits -> shortest decimal string."""
    neg = n < 0
    n = -n if neg else n
    s = str(n)
    if digits:
        s = "0" * max(0, digits + 1 - len(s)) + s
        s = s[:-digits] + "." + s[-digits:]
        s = s.rstrip("0")
        if s.endswith("."):
            s += "0"
    return ("-" if neg else "") + s


class Num:
    """A number carried as an exact decimal string (serialised verbatim)."""

    def __init__(self, n, digits):
        self.text = _fixed(n, digits)

    def __float__(self):
        return float(self.text)


def _div_round(a, b):
    return (2 * a + b) // (2 * b)


def make_reading(node_id, seq, timestamp, m, sensor_type="BME280"):
    """m: result of BME280.read() (needs t_centi, p_q24_8, h_q22_10) or None
    when the sensor read failed."""
    r = {"node_id": node_id, "seq": seq, "timestamp": timestamp, "sensor_type": sensor_type,
         "firmware_version": FIRMWARE_VERSION}
    if m is None:
        r.update(temperature_kelvin=None, humidity_percent=None, pressure_pa=None,
                 quality="invalid", raw_values=None)
        return r
    t_ck = m["t_centi"] + 27315
    p_centi = _div_round(m["p_q24_8"] * 100, 256)  # Pa * 100
    h_centi = _div_round(m["h_q22_10"] * 100, 1024)  # %RH * 100
    ok = (T_MIN_CK <= t_ck <= T_MAX_CK and P_MIN * 100 <= p_centi <= P_MAX * 100
          and H_MIN * 100 <= h_centi <= H_MAX * 100)
    r.update(temperature_kelvin=Num(t_ck, 2), humidity_percent=Num(h_centi, 2),
             pressure_pa=Num(p_centi, 2), quality="good" if ok else "invalid",
             raw_values={"temperature": Num(m["t_centi"], 2), "humidity": Num(h_centi, 2),
                         "pressure": Num(p_centi, 4)})  # hPa = Pa*100 / 10**4
    return r


def _val(v):
    if isinstance(v, Num):
        return v.text
    if isinstance(v, dict):
        return "{" + ", ".join(json.dumps(k) + ": " + _val(v[k])
                               for k in ("temperature", "humidity", "pressure") if k in v) + "}"
    return json.dumps(v)


def serialize(r):
    """Reading dict -> JSON text with keys in the documented order."""
    return "{" + ", ".join(json.dumps(k) + ": " + _val(r[k]) for k in KEYS if k in r) + "}"
