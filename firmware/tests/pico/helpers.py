# Shared test helpers (MicroPython).
import os


def approx(a, b, tol):
    return abs(a - b) <= tol


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def tmpdir(name):
    base = "/tmp/kaiabc-pico-tests"
    for d in (base, base + "/" + name):
        try:
            os.mkdir(d)
        except OSError:
            pass
    d = base + "/" + name
    for f in os.listdir(d):
        os.remove(d + "/" + f)
    return d


class Clock:
    def __init__(self, t=1795784700):  # 2026-11-27T13:05:00Z
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def here():
    # directory of the test files (run.sh runs from there)
    return "."
