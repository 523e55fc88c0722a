# The Pico's wiring: config checks, Wi-Fi join with backoff and NTP, first-boot registration.
import json

import app
import config
import network
import ntptime
from fakenet import FakeRequests, Resp
from helpers import Clock, raises, tmpdir

BASE = {"node_id": "pico_001", "api_key": "k", "mqtt_host": "10.0.0.2"}


def test_config_defaults_and_each_mistake_named():
    cfg = config.check(dict(BASE))
    assert cfg["transport"] == "mqtt" and cfg["sample_interval_s"] == 60
    assert cfg["i2c"]["sda"] == 4 and cfg["bme280"]["address"] == 0x76 and cfg["pwm"]["pin"] == 15
    cases = [
        ({"api_key": None}, "api_key"),
        ({"node_id": "a/b"}, "node_id"),
        ({"transport": "lora"}, "transport"),
        ({"transport": "http"}, "server_url"),
        ({"watchdog_ms": 20000}, "watchdog_ms"),  # the RP2040 watchdog stops at 8.3 s
        ({"sample_interval_s": 0}, "sample_interval_s"),
        ({"api_key": None, "provisioning_token": "t"}, "server_url"),
        ({"wifi": {"password": "x"}}, "wifi"),
    ]
    for change, named in cases:
        raw = dict(BASE)
        raw.update(change)
        raw = {k: v for k, v in raw.items() if v is not None}
        e = raises(config.ConfigError, config.check, raw)
        assert named in str(e), (change, str(e))


def test_config_save_is_whole_and_load_reports_bad_json():
    d = tmpdir("cfg")
    config.save(d + "/c.json", dict(BASE))
    assert config.load(d + "/c.json")["node_id"] == "pico_001"
    with open(d + "/bad.json", "w") as f:
        f.write("{oops")
    assert "not valid JSON" in str(raises(config.ConfigError, config.load, d + "/bad.json"))


def link(fail_joins=0, ntp_failures=0):
    network.WLAN.fail_next = fail_joins
    ntptime.fail_next = ntp_failures
    ntptime.calls.clear()
    cfg = config.check(dict(BASE, wifi={"ssid": "lab", "password": "pw"}))
    clk = Clock()
    feeds = []
    logs = []
    ln = app.WifiLink(cfg, network, ntptime, log=logs.append, feed=lambda: feeds.append(1),
                      sleep=lambda s: None, clock=clk)
    network.WLAN.fail_next = 0
    return ln, clk, feeds, logs


def test_wifi_join_backs_off_then_sets_the_clock_from_ntp():
    ln, clk, feeds, logs = link(fail_joins=2)
    assert not ln.ensure(clk())
    assert feeds, "the watchdog is fed while joining"
    assert not ln.ensure(clk()), "no new attempt before the backoff ends"
    assert len(ln.wlan.connect_calls) == 1
    clk.t += 5
    assert not ln.ensure(clk())  # second failure: the wait doubles
    clk.t += 5
    assert not ln.ensure(clk()) and len(ln.wlan.connect_calls) == 2
    clk.t += 5
    assert ln.ensure(clk()) and ln.wlan.connect_calls[-1] == ("lab", "pw")
    assert ntptime.calls == ["pool.ntp.org"] and ln.clock_ok()
    # Joined: no new NTP query until the resync interval has passed.
    assert ln.ensure(clk() + 60) and len(ntptime.calls) == 1
    assert ln.ensure(clk() + 6 * 3600) and len(ntptime.calls) == 2


def test_ntp_failure_is_retried_later_not_fatal():
    ln, clk, _, logs = link(ntp_failures=1)
    assert ln.ensure(clk())
    assert ln.synced_at is None and any("ntp" in m for m in logs)
    assert ln.ensure(clk() + 10) and ln.synced_at is None, "waits out its backoff"
    assert ln.ensure(clk() + 30) and ln.synced_at is not None


def provisioning(answer):
    d = tmpdir("prov")
    raw = {"node_id": "pico_009", "provisioning_token": "tok", "server_url": "http://s:8000/",
           "mqtt_host": "s"}
    config.save(d + "/config.json", raw)
    cfg = config.check(dict(raw))
    rq = FakeRequests()
    rq.script = [answer]
    return d, raw, cfg, rq


def test_first_boot_registers_and_saves_the_key():
    d, raw, cfg, rq = provisioning(Resp(201, {"node_id": "pico_009", "api_key": "kab_1_x"}))
    assert app.provision(cfg, raw, d + "/config.json", rq, log=lambda m: None)
    url, body, headers = rq.posts[0]
    assert url == "http://s:8000/v1/sensors/nodes" and headers["Authorization"] == "Bearer tok"
    assert json.loads(body)["node_id"] == "pico_009"
    saved = config.load(d + "/config.json")
    assert saved["api_key"] == "kab_1_x" and "provisioning_token" not in saved
    assert cfg["api_key"] == "kab_1_x"


def test_registration_conflicts_and_refusals_need_a_new_config():
    for resp, words in ((Resp(409, {"error": {"code": "NODE_EXISTS"}}), "already registered"),
                        (Resp(403, {"error": {"code": "PERMISSION_DENIED", "message": "m"}}), "403")):
        d, raw, cfg, rq = provisioning(resp)
        e = raises(app.ProvisionError, app.provision, cfg, raw, d + "/config.json", rq,
                   log=lambda m: None)
        assert words in str(e), str(e)
        assert "provisioning_token" in config.load(d + "/config.json")


def test_an_unreachable_server_means_try_again():
    d, raw, cfg, rq = provisioning(OSError(113))
    assert not app.provision(cfg, raw, d + "/config.json", rq, log=lambda m: None)
    d, raw, cfg, rq = provisioning(Resp(503, {}))
    assert not app.provision(cfg, raw, d + "/config.json", rq, log=lambda m: None)


def test_a_node_without_time_waits_to_sample():
    import machine
    from test_node import sensor
    from fakenet import FakeRequests as R

    d = tmpdir("notime")
    cfg = config.check(dict(BASE, transport="http", server_url="http://s", buffer_path=d + "/b",
                            seq_path=d + "/s"))
    clk = Clock(t=1609459200)  # 2021-01-01: the RTC before NTP

    class Link:
        connected = True

        def ensure(self, now):
            return True

        def clock_ok(self):
            return clk() >= 1704067200

    s, _ = sensor()
    n = app.build(cfg, machine, clk, clk.sleep, log=lambda m: None, sensor=s,
                  transport=__import__("transport").HttpTransport(cfg, requests=R()), link=Link())
    n.step()
    assert n.seq.peek() == 1, "no reading stamped with an unset clock"
    clk.t = 1795784700
    n.step()
    assert n.seq.peek() == 2
