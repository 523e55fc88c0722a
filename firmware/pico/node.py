# The node loop: read -> reading (seq, timestamp) -> buffer -> flush ->
# output -> watchdog.  Time and sleep are injected.
from backoff import Backoff
from reading import make_reading, serialize
from timeutil import iso8601


class Node:
    def __init__(self, cfg, sensor, transport, output, buffer, seq, clock, sleep,
                 wdt=None, link=None, log=print, clock_ok=None):
        self.cfg = cfg
        self.node_id = cfg["node_id"]
        self.sensor = sensor
        self.transport = transport
        self.output = output
        self.buffer = buffer
        self.seq = seq
        self.clock = clock
        self.sleep = sleep
        self.wdt = wdt
        self.link = link  # object with ensure(now) -> bool (Wi-Fi), optional
        self._log = log
        # False until the clock is set (NTP): a reading stamped 2021-01-01 would be wrong data.
        self.clock_ok = clock_ok or (lambda: True)
        self.waiting_logged = False
        self.flush_backoff = Backoff(5, 300)
        self.stats = {"read_errors": 0, "sent": 0, "rejected": 0, "auth_failures": 0}

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def sample(self, now):
        try:
            m = self.sensor.read()
        except Exception as e:
            self.stats["read_errors"] += 1
            self._log("sensor read failed: %r" % (e,))
            m = None
        r = make_reading(self.node_id, self.seq.next(), iso8601(now), m)
        self.buffer.append(serialize(r))
        return r

    def flush(self, now):
        while len(self.buffer) and self.flush_backoff.ready(now):
            batch = self.buffer.peek(20)
            res = self.transport.send(batch, now)
            self.feed()
            if res.status == "ok":
                self.buffer.ack(res.done)
                self.stats["sent"] += res.done - len(res.rejected)
                self.stats["rejected"] += len(res.rejected)
                self.flush_backoff.ok()
                if res.done == 0:
                    break
                continue
            if res.status == "auth":
                self.stats["auth_failures"] += 1
            wait = self.flush_backoff.fail(now, res.retry_after)
            self._log("flush: %s, %d buffered, retry in %d s" % (res.status, len(self.buffer), wait))
            break

    def step(self):
        now = self.clock()
        self.feed()
        up = self.link.ensure(now) if self.link is not None else True
        self.feed()
        now = self.clock()  # a join may have set the clock from NTP
        if self.clock_ok():
            self.sample(now)
        elif not self.waiting_logged:
            self.waiting_logged = True
            self._log("no UTC time yet (NTP): readings start once the clock is set")
        self.feed()
        if up:
            self.flush(now)
            for msg in self.transport.poll(now):
                self.output.on_message(msg, now)
        self.output.tick(now, up and self.transport.connected)
        self.feed()

    def run(self, steps=None):
        interval = self.cfg["sample_interval_s"]
        slice_s = max(1, self.cfg.get("watchdog_ms", 8000) // 2000)
        n = 0
        while steps is None or n < steps:
            start = self.clock()
            self.step()
            n += 1
            while self.clock() - start < interval:
                self.sleep(min(slice_s, interval - (self.clock() - start)))
                self.feed()
