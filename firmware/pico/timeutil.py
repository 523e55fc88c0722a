# UTC time helpers independent of the port's epoch (the rp2 port used a 2000
# epoch before v1.22-ish, the unix port uses 1970).
import time

try:
    _EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
except Exception:
    _EPOCH_OFFSET = 0

SYNCED_AFTER = 1704067200  # 2024-01-01: anything earlier means NTP has not run


def unix_now():
    return time.time() + _EPOCH_OFFSET


def _civil(days):
    # days since 1970-01-01 -> (y, m, d)   (H. Hinnant's algorithm)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _days(y, m, d):
    y = y - 1 if m <= 2 else y
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def iso8601(unix_s):
    s = int(unix_s)
    days, rem = s // 86400, s % 86400
    y, m, d = _civil(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, rem // 3600, (rem // 60) % 60, rem % 60)


def parse_iso8601(s):
    """'YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)' -> unix seconds (float) or None."""
    try:
        if not isinstance(s, str) or len(s) < 20 or s[4] != "-" or s[10] not in "Tt ":
            return None
        y, mo, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
        hh, mm, ss = int(s[11:13]), int(s[14:16]), int(s[17:19])
        rest = s[19:]
        frac = 0.0
        if rest.startswith("."):
            i = 1
            while i < len(rest) and rest[i] in "0123456789":
                i += 1
            frac = float("0" + rest[:i])
            rest = rest[i:]
        if rest in ("Z", "z", "+00:00"):
            off = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            off = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
        else:
            return None
        if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
            return None
        return _days(y, mo, d) * 86400 + hh * 3600 + mm * 60 + ss + frac - off
    except (ValueError, IndexError):
        return None
