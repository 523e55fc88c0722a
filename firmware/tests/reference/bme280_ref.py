"""An independent reference for the BME280's compensation: Bosch's double-precision formulas
(BME280 datasheet BST-BME280-DS002, section 8.1), written from the datasheet alone, in CPython.

The firmware (MicroPython integer formulas of section 4.2.3, Lua double formulas) is checked
against the vectors this script writes (`vectors.json`): calibration register bytes as the chip
holds them, raw readings, and the compensated values. Run it to regenerate the file; the
firmware tests check that the committed file is what this script produces.

The one published worked example for these formulas is the BMP280 datasheet's (BST-BMP280-DS001,
section 3.12, whose temperature and pressure formulas the BME280 shares): with its calibration
and adc_T = 519888, adc_P = 415148 it gives 25.08 degC and 100653.27 Pa. This script asserts it.
"""

import json
import random
import struct
import sys
from pathlib import Path


def temperature(adc_t, c):
    """(degC, t_fine) from a 20-bit raw temperature."""
    var1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
    var2 = (adc_t / 131072.0 - c["T1"] / 8192.0) ** 2 * c["T3"]
    t_fine = var1 + var2
    return t_fine / 5120.0, t_fine


def pressure(adc_p, t_fine, c):
    """Pa from a 20-bit raw pressure."""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c["P6"] / 32768.0
    var2 = var2 + var1 * c["P5"] * 2.0
    var2 = var2 / 4.0 + c["P4"] * 65536.0
    var1 = (c["P3"] * var1 * var1 / 524288.0 + c["P2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c["P1"]
    if var1 == 0.0:
        return 0.0  # the datasheet's guard against division by zero
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c["P9"] * p * p / 2147483648.0
    var2 = p * c["P8"] / 32768.0
    return p + (var1 + var2 + c["P7"]) / 16.0


def humidity(adc_h, t_fine, c):
    """%RH from a 16-bit raw humidity, clamped to 0..100 as the datasheet does."""
    h = t_fine - 76800.0
    h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * h)) * (
        c["H2"] / 65536.0 * (1.0 + c["H6"] / 67108864.0 * h * (1.0 + c["H3"] / 67108864.0 * h))
    )
    h = h * (1.0 - c["H1"] * h / 524288.0)
    return min(100.0, max(0.0, h))


def calibration_bytes(c):
    """The calibration registers as the chip holds them: 0x88..0xA1 (26 bytes) and 0xE1..0xE7
    (7 bytes), datasheet table 16."""
    block1 = struct.pack(
        "<HhhHhhhhhhhhBB",  # T1 T2 T3 P1..P9, then 0xA0 (reserved) and H1 at 0xA1
        c["T1"], c["T2"], c["T3"], c["P1"], c["P2"], c["P3"], c["P4"], c["P5"], c["P6"],
        c["P7"], c["P8"], c["P9"], 0, c["H1"],
    )
    h4, h5 = c["H4"] & 0xFFF, c["H5"] & 0xFFF
    block2 = struct.pack("<hB", c["H2"], c["H3"]) + bytes(
        [h4 >> 4, (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4]
    ) + struct.pack("<b", c["H6"])
    assert len(block1) == 26 and len(block2) == 7
    return block1, block2


def data_bytes(adc_p, adc_t, adc_h):
    """The burst read 0xF7..0xFE: press_msb, lsb, xlsb, temp_msb, lsb, xlsb, hum_msb, lsb."""
    return bytes([
        adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
        adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
        adc_h >> 8, adc_h & 0xFF,
    ])


# The BMP280 datasheet's worked example (section 3.12) for T and P; H from a BME280 in use.
DATASHEET = {
    "T1": 27504, "T2": 26435, "T3": -1000,
    "P1": 36477, "P2": -10685, "P3": 3024, "P4": 2855, "P5": 140, "P6": -7,
    "P7": 15500, "P8": -14600, "P9": 6000,
    "H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30,
}


def calibrations(rng):
    """The datasheet's set and chip-like sets around it: every sign and range the registers
    allow in practice, including negative H4/H5 (12-bit signed) and T3/P6 near their limits."""
    sets = [dict(DATASHEET)]
    for _ in range(5):
        c = {
            "T1": rng.randint(26000, 29500), "T2": rng.randint(25500, 27500),
            "T3": rng.randint(-1000, 1000),
            "P1": rng.randint(35000, 39000), "P2": rng.randint(-11000, -10200),
            "P3": rng.randint(2800, 3300), "P4": rng.randint(2000, 9000),
            "P5": rng.randint(-200, 200), "P6": rng.randint(-10, 10),
            "P7": rng.randint(9000, 16000), "P8": rng.randint(-15000, -10000),
            "P9": rng.randint(4000, 6500),
            "H1": rng.randint(60, 90), "H2": rng.randint(340, 380), "H3": rng.randint(0, 10),
            "H4": rng.randint(-200, 400), "H5": rng.randint(-50, 60), "H6": rng.randint(20, 40),
        }
        sets.append(c)
    return sets


def vectors():
    rng = random.Random(280)
    out = []
    for i, c in enumerate(calibrations(rng)):
        raws = [(415148, 519888, 30000)] if i == 0 else []
        # Raw humidity around the calibration's offset (H4 * 64) so most cases fall inside
        # 0..100 %, and the last two far off it, to check the clamping.
        raws += [
            (rng.randint(250000, 600000), rng.randint(400000, 600000),
             max(0, c["H4"] * 64 + rng.randint(2000, 22000)))
            for _ in range(6)
        ]
        raws += [(rng.randint(250000, 600000), rng.randint(400000, 600000), h)
                 for h in (0, 65535)]
        block1, block2 = calibration_bytes(c)
        cases = []
        for adc_p, adc_t, adc_h in raws:
            t, t_fine = temperature(adc_t, c)
            cases.append({
                "adc_p": adc_p, "adc_t": adc_t, "adc_h": adc_h,
                "data_hex": data_bytes(adc_p, adc_t, adc_h).hex(),
                "temperature_c": t,
                "pressure_pa": pressure(adc_p, t_fine, c),
                "humidity_percent": humidity(adc_h, t_fine, c),
            })
        out.append({
            "calibration": c,
            "calib_88_a1_hex": block1.hex(),
            "calib_e1_e7_hex": block2.hex(),
            "cases": cases,
        })
    return out


def main():
    t, t_fine = temperature(519888, DATASHEET)
    p = pressure(415148, t_fine, DATASHEET)
    # BMP280 datasheet section 3.12: 25.08 degC, 100653.27 Pa (double precision).
    assert abs(t - 25.08) < 0.005, t
    assert abs(p - 100653.27) < 0.01, p
    text = json.dumps({"source": "firmware/tests/reference/bme280_ref.py", "sets": vectors()},
                      indent=1, sort_keys=True) + "\n"
    path = Path(__file__).with_name("vectors.json")
    if "--check" in sys.argv:
        if path.read_text() != text:
            sys.exit(f"{path} is not what {__file__} produces: regenerate it")
        print("bme280 vectors: up to date, datasheet example reproduced")
    else:
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
