# Test double for MicroPython's `machine` module (used ONLY by the tests).

class Pin:
    OUT = 1
    IN = 0

    def __init__(self, id, mode=-1, value=None):
        self.id = id
        self.mode = mode


class FakeBME280:
    """A simulated BME280 register map.

    Forced mode: writing ctrl_meas with mode bits 01 sets status bit 3
    ('measuring') for `busy_reads` reads of 0xF3, then clears it and returns
    the chip to sleep mode.  `ops` records every register access in order."""

    def __init__(self, calib_88_a1=bytes(26), calib_e1_e7=bytes(7), data=bytes(8),
                 chip_id=0x60, busy_reads=2, never_ready=False):
        self.regs = bytearray(256)
        self.regs[0xD0] = chip_id
        self.regs[0x88:0x88 + 26] = calib_88_a1
        self.regs[0xE1:0xE1 + 7] = calib_e1_e7
        self.regs[0xF7:0xF7 + 8] = data
        self.busy_reads = busy_reads
        self.never_ready = never_ready
        self._busy = 0
        self.ops = []
        self.resets = 0
        self.fail_reads = False

    def set_data(self, data):
        self.regs[0xF7:0xF7 + 8] = data

    def read(self, reg, n):
        if self.fail_reads and reg == 0xF7:
            raise OSError(5)  # EIO
        self.ops.append(("r", reg, n))
        if reg == 0xF3:
            if self.never_ready:
                return bytes([0x08])
            if self._busy > 0:
                self._busy -= 1
                return bytes([0x08])
            return bytes([0x00])
        return bytes(self.regs[reg:reg + n])

    def write(self, reg, buf):
        for i, b in enumerate(buf):
            self.ops.append(("w", reg + i, b))
            r = reg + i
            if r == 0xE0 and b == 0xB6:
                self.resets += 1
                continue
            self.regs[r] = b
            if r == 0xF4 and b & 0x03 in (1, 2):
                self._busy = self.busy_reads

    def writes_to(self, reg):
        return [op[2] for op in self.ops if op[0] == "w" and op[1] == reg]


class I2C:
    # devices attached to the next I2C() created (used by main.py tests)
    default_devices = {}

    def __init__(self, id=0, sda=None, scl=None, freq=400000):
        self.id = id
        self.sda = sda
        self.scl = scl
        self.freq = freq
        self.devices = dict(I2C.default_devices)

    def _dev(self, addr):
        if addr not in self.devices:
            raise OSError(19)  # ENODEV, like a NACK on the bus
        return self.devices[addr]

    def readfrom_mem(self, addr, memaddr, nbytes):
        return self._dev(addr).read(memaddr, nbytes)

    def writeto_mem(self, addr, memaddr, buf):
        self._dev(addr).write(memaddr, bytes(buf))

    def scan(self):
        return sorted(self.devices)


class PWM:
    instances = []

    def __init__(self, pin, freq=None):
        self.pin = pin
        self._freq = freq
        self.duties = []
        PWM.instances.append(self)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f

    def duty_u16(self, d=None):
        if d is None:
            return self.duties[-1] if self.duties else 0
        if not 0 <= d <= 65535:
            raise ValueError("duty out of range")
        self.duties.append(d)


class WDT:
    instances = []

    def __init__(self, id=0, timeout=5000):
        if timeout > 8388:
            raise ValueError("WDT timeout too long")  # RP2040 limit
        self.timeout = timeout
        self.feeds = 0
        WDT.instances.append(self)

    def feed(self):
        self.feeds += 1


reset_calls = []


def reset():
    reset_calls.append(1)
    raise SystemExit("machine.reset()")
