# Wires the node together on the Pico: config, Wi-Fi and NTP, first-boot registration, the
# BME280, the transport, the PWM output and the watchdog. main.py calls main(); the host
# tests call build() and provision() with their own clock and fakes of the hardware.
import json
import time

import config as config_mod
import reading
from backoff import Backoff
from timeutil import SYNCED_AFTER, unix_now

# How long one Wi-Fi join may take before it counts as failed (the Pico joins in 2-5 s).
JOIN_WAIT_S = 15


class ProvisionError(Exception):
    """Registration failed in a way retrying cannot fix (the config must change)."""


class WifiLink:
    """Keeps the station joined, with exponential backoff between attempts, and sets the RTC
    to UTC from NTP after each join and every ntp_resync_s. The watchdog is fed while it
    waits, so a slow join never resets the node."""

    def __init__(self, cfg, network, ntptime, log=print, feed=None, sleep=time.sleep,
                 clock=unix_now):
        self.cfg = cfg
        self.ntptime = ntptime
        self.wlan = network.WLAN(network.STA_IF)
        self.backoff = Backoff(5, 600)
        self.ntp_backoff = Backoff(30, 3600)
        self.synced_at = None
        self._log = log
        self._feed = feed or (lambda: None)
        self._sleep = sleep
        self._clock = clock

    def clock_ok(self):
        return self._clock() >= SYNCED_AFTER

    def _sync(self, now):
        due = self.synced_at is None or now - self.synced_at >= self.cfg["ntp_resync_s"]
        if not due or not self.ntp_backoff.ready(now):
            return
        self.ntptime.host = self.cfg["ntp_host"]
        try:
            self.ntptime.settime()
        except Exception as e:
            wait = self.ntp_backoff.fail(now)
            self._log("ntp: %s failed (%r); retry in %d s" % (self.cfg["ntp_host"], e, wait))
            return
        self.ntp_backoff.ok()
        self.synced_at = self._clock()
        self._log("ntp: clock set, UTC %d" % self.synced_at)

    def ensure(self, now):
        if self.wlan.isconnected():
            self._sync(now)
            return True
        wifi = self.cfg.get("wifi")
        if not wifi or not self.backoff.ready(now):
            return False
        self.wlan.active(True)
        self.wlan.connect(wifi["ssid"], wifi.get("password", ""))
        waited = 0
        while not self.wlan.isconnected() and waited < JOIN_WAIT_S:
            self._feed()
            self._sleep(0.5)
            waited += 0.5
        if not self.wlan.isconnected():
            status = self.wlan.status()
            self.wlan.disconnect()
            wait = self.backoff.fail(now)
            self._log("wifi: cannot join %r (status %s); retry in %d s" % (wifi["ssid"], status, wait))
            return False
        self.backoff.ok()
        self._log("wifi: joined %r as %s" % (wifi["ssid"], self.wlan.ifconfig()[0]))
        self._sync(now)
        return True


def provision(cfg, raw, path, requests, log=print):
    """Registers the node with its provisioning token and saves the API key it gets into the
    config file, so later boots use the key. True once registered; False when the server
    could not be reached (try again later); ProvisionError when only a new config helps."""
    url = cfg["server_url"].rstrip("/") + "/v1/sensors/nodes"
    body = json.dumps({"node_id": cfg["node_id"], "sensor_type": "BME280",
                       "hardware_type": "raspberry_pi_pico", "runtime": "micropython",
                       "sensor_types": ["temperature", "humidity", "pressure"],
                       "firmware_version": reading.FIRMWARE_VERSION})
    headers = {"Authorization": "Bearer " + cfg["provisioning_token"],
               "Content-Type": "application/json"}
    try:
        r = requests.post(url, data=body, headers=headers)
    except Exception as e:
        log("provision: cannot reach %s: %r" % (url, e))
        return False
    try:
        code = r.status_code
        try:
            answer = r.json()
        except Exception:
            answer = {}
    finally:
        r.close()
    if code == 201 and answer.get("api_key"):
        raw["api_key"] = answer["api_key"]
        raw.pop("provisioning_token", None)
        config_mod.save(path, raw)
        cfg["api_key"] = answer["api_key"]
        cfg.pop("provisioning_token", None)
        log("provision: registered %s; API key saved to %s" % (cfg["node_id"], path))
        return True
    err = answer.get("error") or {}
    if code == 409:
        raise ProvisionError("node %s is already registered; put its API key in api_key"
                             % cfg["node_id"])
    if code in (400, 401, 403):
        raise ProvisionError("registration refused (%d %s): %s" % (
            code, err.get("code"), err.get("message")))
    log("provision: server answered %d; will retry" % code)
    return False


def make_sensor(cfg, machine, log=print):
    """The BME280 on the configured I2C bus; None (logged) when it does not answer, so the
    node keeps running and sends its readings as invalid."""
    import bme280
    i = cfg["i2c"]
    b = cfg["bme280"]
    bus = machine.I2C(i["id"], sda=machine.Pin(i["sda"]), scl=machine.Pin(i["scl"]),
                      freq=i["freq"])
    try:
        return bme280.BME280(bus, address=b["address"], mode=b["mode"], osrs_t=b["osrs_t"],
                             osrs_p=b["osrs_p"], osrs_h=b["osrs_h"], filter=b["filter"],
                             standby_ms=b["standby_ms"])
    except Exception as e:
        log("bme280: %s" % (e,))
        return None


class Missing:
    """Stands in for a sensor that did not answer at boot: every read fails, so each
    reading goes out marked invalid and the dead letters show the sensor is down."""

    def __init__(self, why):
        self.why = why

    def read(self):
        raise OSError(self.why)


def build(cfg, machine, clock, sleep, log=print, sensor=None, transport=None, wdt=None,
          link=None):
    """The node with everything it drives; hardware comes from `machine`."""
    from buffer import RingBuffer
    from node import Node
    from output import Output
    from seqstore import SeqStore
    from transport import HttpTransport, MqttTransport

    if sensor is None:
        sensor = make_sensor(cfg, machine, log) or Missing("BME280 not found at boot")
    if transport is None:
        transport = (MqttTransport(cfg, log=log) if cfg["transport"] == "mqtt"
                     else HttpTransport(cfg, log=log))
    p = cfg["pwm"]
    pwm = machine.PWM(machine.Pin(p["pin"]))
    pwm.freq(p["freq"])
    out = Output(pwm, stale_s=cfg["output_stale_s"], log=log)
    return Node(cfg, sensor, transport, out, RingBuffer(cfg["buffer_path"], cfg["buffer_capacity"], log=log),
                SeqStore(cfg["seq_path"]), clock, sleep, wdt=wdt, link=link, log=log,
                clock_ok=link.clock_ok if link is not None else None)


def main(path="config.json"):
    import machine
    import network
    import ntptime

    log = print
    try:
        with open(path) as f:
            raw = json.load(f)
        cfg = config_mod.check(raw)
    except (OSError, ValueError, config_mod.ConfigError) as e:
        # A reset would only read the same file again: say why and wait for a new one.
        log("config: %s" % (e,))
        while True:
            time.sleep(60)
    wdt = machine.WDT(timeout=cfg["watchdog_ms"])
    link = WifiLink(cfg, network, ntptime, log, feed=wdt.feed)
    if not cfg.get("api_key"):
        import urequests
        wait = Backoff(10, 600)
        while True:
            now = unix_now()
            wdt.feed()
            if wait.ready(now) and link.ensure(now):
                try:
                    if provision(cfg, raw, path, urequests, log):
                        break
                except ProvisionError as e:
                    log("provision: %s" % e)
                    wait.fail(now, 3600)
                    continue
                wait.fail(now)
            time.sleep(1)
    node = build(cfg, machine, unix_now, time.sleep, log, wdt=wdt, link=link)
    try:
        node.run()
    except Exception as e:
        # Not expected: every step catches what the network and sensor throw. Start over.
        log("fatal: %r; resetting in 10 s" % (e,))
        time.sleep(10)
        machine.reset()
