# BME280 driver for MicroPython (I2C), Bosch integer compensation
# (BME280 datasheet rev 1.x, section 4.2.3).  All compensation runs on
# Python ints (arbitrary precision), so the 64-bit pressure formula is exact.
import time

REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB_00 = 0x88  # 0x88..0xA1, 26 bytes
REG_CALIB_26 = 0xE1  # 0xE1..0xE7, 7 bytes
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # 0xF7..0xFE, 8 bytes

CHIP_ID = 0x60
RESET_WORD = 0xB6
STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01

MODE_SLEEP = 0
MODE_FORCED = 1
MODE_NORMAL = 3

OSRS = {1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
FILTER = {0: 0, 2: 1, 4: 2, 8: 3, 16: 4}
# t_sb field of 0xF5 (BME280 table 27)
STANDBY_MS = {0.5: 0, 62.5: 1, 125: 2, 250: 3, 500: 4, 1000: 5, 10: 6, 20: 7}


class BME280Error(Exception):
    pass


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = _u16(b, i)
    return v - 0x10000 if v & 0x8000 else v


def _s8(v):
    return v - 0x100 if v & 0x80 else v


def parse_calibration(c1, c2):
    """c1 = 26 bytes from 0x88..0xA1, c2 = 7 bytes from 0xE1..0xE7."""
    if len(c1) != 26 or len(c2) != 7:
        raise BME280Error("calibration block has wrong length")
    cal = {"T1": _u16(c1, 0), "T2": _s16(c1, 2), "T3": _s16(c1, 4), "P1": _u16(c1, 6)}
    for k in range(2, 10):
        cal["P%d" % k] = _s16(c1, 8 + 2 * (k - 2))
    cal["H1"] = c1[25]  # 0xA1 (0xA0 unused)
    cal["H2"] = _s16(c2, 0)  # 0xE1/0xE2
    cal["H3"] = c2[2]  # 0xE3
    cal["H4"] = (_s8(c2[3]) << 4) | (c2[4] & 0x0F)  # 0xE4, 0xE5[3:0]
    cal["H5"] = (_s8(c2[5]) << 4) | (c2[4] >> 4)  # 0xE6, 0xE5[7:4]
    cal["H6"] = _s8(c2[6])  # 0xE7
    return cal


def parse_data(d):
    """8 bytes from 0xF7..0xFE -> (adc_p, adc_t, adc_h)."""
    adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
    adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
    adc_h = (d[6] << 8) | d[7]
    return adc_p, adc_t, adc_h


def _cdiv(a, b):
    # C integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_t(cal, adc_t):
    """-> (temperature in 0.01 degC, t_fine)."""
    t1, t2, t3 = cal["T1"], cal["T2"], cal["T3"]
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    x = (adc_t >> 4) - t1
    var2 = (((x * x) >> 12) * t3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_p(cal, adc_p, t_fine):
    """-> pressure in Pa as unsigned Q24.8 (divide by 256), 0 if invalid."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal["P6"]
    var2 = var2 + ((var1 * cal["P5"]) << 17)
    var2 = var2 + (cal["P4"] << 35)
    var1 = ((var1 * var1 * cal["P3"]) >> 8) + ((var1 * cal["P2"]) << 12)
    var1 = (((1 << 47) + var1) * cal["P1"]) >> 33
    if var1 == 0:
        return 0  # avoid division by zero
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (cal["P9"] * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal["P8"] * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal["P7"] << 4)


def compensate_h(cal, adc_h, t_fine):
    """-> humidity in %RH as unsigned Q22.10 (divide by 1024)."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (cal["H4"] << 20) - (cal["H5"] * v)) + 16384) >> 15) * (
        ((((((v * cal["H6"]) >> 10) * (((v * cal["H3"]) >> 11) + 32768)) >> 10) + 2097152)
         * cal["H2"] + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal["H1"]) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


def compensate(cal, adc_p, adc_t, adc_h):
    t_centi, t_fine = compensate_t(cal, adc_t)
    p_q24_8 = compensate_p(cal, adc_p, t_fine)
    h_q22_10 = compensate_h(cal, adc_h, t_fine)
    return {
        "temperature_c": t_centi / 100,
        "pressure_pa": p_q24_8 / 256,
        "humidity_percent": h_q22_10 / 1024,
        "t_centi": t_centi,
        "p_q24_8": p_q24_8,
        "h_q22_10": h_q22_10,
        "adc_t": adc_t,
        "adc_p": adc_p,
        "adc_h": adc_h,
    }


def _lookup(table, value, what):
    if value not in table:
        raise BME280Error("bme280.%s must be one of %s, got %r" % (what, sorted(table), value))
    return table[value]


class BME280:
    def __init__(self, i2c, address=0x76, mode="forced", osrs_t=1, osrs_p=1, osrs_h=1,
                 filter=0, standby_ms=1000, sleep_ms=None, timeout_ms=200):
        if address not in (0x76, 0x77):
            raise BME280Error("BME280 I2C address must be 0x76 or 0x77, got 0x%02x" % address)
        if mode not in ("forced", "normal"):
            raise BME280Error("bme280.mode must be 'forced' or 'normal', got %r" % (mode,))
        self.i2c = i2c
        self.address = address
        self.mode = mode
        self._ot = _lookup(OSRS, osrs_t, "osrs_t")
        self._op = _lookup(OSRS, osrs_p, "osrs_p")
        self._oh = _lookup(OSRS, osrs_h, "osrs_h")
        self._filter = _lookup(FILTER, filter, "filter")
        self._tsb = _lookup(STANDBY_MS, standby_ms, "standby_ms")
        self._osrs = (osrs_t, osrs_p, osrs_h)
        self._sleep_ms = sleep_ms or time.sleep_ms
        self.timeout_ms = timeout_ms
        self.calibration = None
        self.init()

    # -- register access
    def _read(self, reg, n):
        return self.i2c.readfrom_mem(self.address, reg, n)

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.address, reg, bytes([value & 0xFF]))

    def _wait_status_clear(self, mask, what):
        waited = 0
        while self._read(REG_STATUS, 1)[0] & mask:
            if waited >= self.timeout_ms:
                raise BME280Error("BME280 timeout waiting for %s (%d ms)" % (what, waited))
            self._sleep_ms(2)
            waited += 2

    def ctrl_meas_byte(self, mode_bits):
        return (self._ot << 5) | (self._op << 2) | mode_bits

    def config_byte(self):
        return (self._tsb << 5) | (self._filter << 2)

    def init(self):
        try:
            chip = self._read(REG_CHIP_ID, 1)[0]
        except OSError as e:
            raise BME280Error("no BME280 answering at I2C 0x%02x (%s)" % (self.address, e))
        if chip != CHIP_ID:
            raise BME280Error("chip id at 0x%02x is 0x%02x, expected 0x60 (BME280); "
                              "0x58 would be a BMP280 (no humidity)" % (self.address, chip))
        self._write(REG_RESET, RESET_WORD)
        self._sleep_ms(3)  # start-up time 2 ms
        self._wait_status_clear(STATUS_IM_UPDATE, "NVM copy after reset")
        self.calibration = parse_calibration(self._read(REG_CALIB_00, 26), self._read(REG_CALIB_26, 7))
        # ctrl_hum only takes effect after a write to ctrl_meas; config is
        # written while in sleep mode (writes in normal mode may be ignored).
        self._write(REG_CTRL_HUM, self._oh)
        self._write(REG_CTRL_MEAS, self.ctrl_meas_byte(MODE_SLEEP))
        self._write(REG_CONFIG, self.config_byte())
        if self.mode == "normal":
            self._write(REG_CTRL_MEAS, self.ctrl_meas_byte(MODE_NORMAL))

    def measure_time_ms(self):
        # datasheet 9.1, maximum measurement time
        t, p, h = self._osrs
        return int(1.25 + 2.3 * t + 2.3 * p + 0.575 + 2.3 * h + 0.575) + 1

    def read_raw(self):
        if self.mode == "forced":
            self._write(REG_CTRL_MEAS, self.ctrl_meas_byte(MODE_FORCED))
            self._sleep_ms(self.measure_time_ms())
            self._wait_status_clear(STATUS_MEASURING, "forced measurement")
        return parse_data(self._read(REG_DATA, 8))

    def read(self):
        adc_p, adc_t, adc_h = self.read_raw()
        if adc_t == 0x80000 or adc_p == 0x80000 or adc_h == 0x8000:
            raise BME280Error("BME280 returned the 'skipped' value; measurement not valid")
        return compensate(self.calibration, adc_p, adc_t, adc_h)
