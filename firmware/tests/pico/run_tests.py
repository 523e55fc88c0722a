# Minimal test runner for MicroPython: imports test_*.py modules named on the
# command line (or the default list), runs every function named test_*,
# prints pass/fail and exits 1 on any failure.
import os
import sys

DEFAULT = sorted(f[:-3] for f in os.listdir(".") if f.startswith("test_") and f.endswith(".py"))


def main(argv):
    names = [a[:-3] if a.endswith(".py") else a for a in argv] or DEFAULT
    passed = failed = 0
    failures = []
    for name in names:
        mod = __import__(name)
        tests = sorted(k for k in dir(mod) if k.startswith("test_"))
        for t in tests:
            fn = getattr(mod, t)
            if not callable(fn):
                continue
            try:
                fn()
            except Exception as e:
                failed += 1
                failures.append((name, t))
                print("FAIL %s.%s" % (name, t))
                sys.print_exception(e)
            else:
                passed += 1
                print("ok   %s.%s" % (name, t))
    print("%d passed, %d failed" % (passed, failed))
    if failed or passed == 0:
        sys.exit(1)


main(sys.argv[1:])
