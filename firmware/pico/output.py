# Circadian output on a PWM pin.  Online: apply the server's pwm_duty.
# Offline (no fresh output or link down): continue along the learned duty
# curve over circadian time, advancing at 24/period_hours circadian hours per
# real hour from the last output received.
from timeutil import parse_iso8601

BINS = 48
BIN_H = 24 / BINS  # 0.5 h


class Output:
    def __init__(self, pwm, stale_s=180, log=None):
        self.pwm = pwm
        self.stale_s = stale_s
        self.curve = [None] * BINS
        self.last = None  # (ct, period_h, anchor_unix, duty)
        self.last_key = None
        self.last_rx = None
        self.duty = None
        self.mode = "none"
        self._log = log or (lambda *a: None)

    def _apply(self, duty):
        duty = max(0, min(255, int(duty + 0.5)))
        if duty != self.duty:
            self.pwm.duty_u16(duty * 257)
            self.duty = duty

    def on_message(self, msg, now):
        """msg: dict with pwm_duty, circadian_time, period_hours, timestamp, seq.
        Returns True if applied."""
        try:
            duty = int(msg["pwm_duty"])
            ct = float(msg["circadian_time"]) % 24
            period = float(msg.get("period_hours") or 24.0)
        except (KeyError, TypeError, ValueError):
            self._log("output: malformed message ignored")
            return False
        if not 0 <= duty <= 255 or not 1 <= period <= 100:
            self._log("output: out-of-range message ignored")
            return False
        key = (msg.get("seq"), msg.get("timestamp"))
        if key == self.last_key and key != (None, None):
            return False  # retained re-delivery of what we already have
        ts = parse_iso8601(msg.get("timestamp"))
        anchor = ts if ts is not None and ts <= now + 60 else now
        self.last_key = key
        self.last = (ct, period, anchor, duty)
        self.last_rx = now
        self.curve[int(ct / BIN_H) % BINS] = duty
        self.mode = "online"
        self._apply(duty)
        return True

    def circadian_time_at(self, now):
        ct, period, anchor, _ = self.last
        return (ct + (now - anchor) / 3600 * 24 / period) % 24

    def curve_at(self, ct):
        filled = [i for i in range(BINS) if self.curve[i] is not None]
        if not filled:
            return None
        if len(filled) == 1:
            return self.curve[filled[0]]
        x = ct / BIN_H - 0.5  # position in bin-centre units
        # previous filled centre (circularly) at or below x, next above
        lo = hi = None
        for i in filled:
            if i <= x:
                lo = i
            elif hi is None:
                hi = i
        if lo is None:
            lo = filled[-1] - BINS
        if hi is None:
            hi = filled[0] + BINS
        span = hi - lo
        w = (x - lo) / span
        return self.curve[lo % BINS] * (1 - w) + self.curve[hi % BINS] * w

    def tick(self, now, link_up=True):
        if self.last is None:
            self.mode = "none"
            return self.duty
        if link_up and now - self.last_rx <= self.stale_s:
            self.mode = "online"
            return self.duty
        self.mode = "offline"
        v = self.curve_at(self.circadian_time_at(now))
        self._apply(self.last[3] if v is None else v)
        return self.duty
