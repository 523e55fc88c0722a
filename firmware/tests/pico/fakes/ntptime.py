# Test double for MicroPython's `ntptime` module.
host = "pool.ntp.org"
fail_next = 0
calls = []


def settime():
    calls.append(host)
    global fail_next
    if fail_next > 0:
        fail_next -= 1
        raise OSError(110)  # ETIMEDOUT
