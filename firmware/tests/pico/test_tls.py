# MQTT over TLS: the real transport and umqtt.simple over MicroPython's ssl (mbedTLS) against
# the real Mosquitto that run.sh starts (tests/broker.sh): a TLS listener with a certificate
# from scripts/certs.sh, one whose certificate another CA signed, one with a certificate for
# another name, and the plain listener.
#
# The umqtt.simple here is PyPI's 1.3.4 (env.sh): `ssl` is a flag and connect() imports ussl,
# which the transport provides (transport.UsslShim). umqtt.simple >= 1.4 (what mip installs on
# a Pico W) takes an SSLContext instead: Umqtt14 below is that API over the 1.3.4 client, run
# against the same listeners, and FakeClient / LegacyFakeClient (fakes/fakenet.py) are both
# APIs without a network.
import json
import os
import random
import sys
import time

import config
from fakenet import Broker, FakeClient, FakeContext, LegacyFakeClient
from helpers import raises, tmpdir
from transport import MqttTransport, UsslShim, ca_certs, tls_context
from umqtt.simple import MQTTClient


def env(name):
    v = os.getenv(name)
    if not v:
        raise AssertionError("%s is not set: run firmware/tests/pico/run.sh (it starts Mosquitto)" % name)
    return v


UNIQ = "%d%d" % (time.time(), random.getrandbits(20))


def cfg(node, port_env="MQTT_TLS_PORT", host="127.0.0.1", ca_env="MQTT_TLS_CA", **kw):
    c = {"node_id": node + UNIQ, "api_key": "k", "mqtt_host": host, "mqtt_tls": True,
         "mqtt_port": int(env(port_env)), "mqtt_ca_file": env(ca_env)}
    c.update(kw)
    return config.check(c)


def saw(client_id):
    """Mosquitto logs 'New client connected ... as <id>' only once it has read a CONNECT."""
    time.sleep(0.3)
    with open(env("MQTT_BROKER_LOG")) as f:
        log = f.read()
    return (" as %s " % client_id) in log or (" as %s\n" % client_id) in log


class Sub:
    """A plain-listener subscriber (umqtt.simple) that collects what arrives."""

    def __init__(self, topic):
        self.got = []
        self.c = MQTTClient("sub" + UNIQ + topic[-6:], "127.0.0.1", port=int(env("MQTT_PORT")))
        self.c.set_callback(lambda t, m: self.got.append((t.decode(), m.decode())))
        self.c.connect()
        self.c.subscribe(topic, qos=1)

    def wait(self, n=1, s=5.0):
        deadline = time.time() + s
        while len(self.got) < n and time.time() < deadline:
            self.c.check_msg()
            time.sleep(0.05)
        return self.got

    def close(self):
        self.c.disconnect()


def test_ca_file_pem_and_der_decode_to_the_same_der():
    with open(env("MQTT_TLS_CA_DER"), "rb") as f:
        der = f.read()
    assert ca_certs(env("MQTT_TLS_CA")) == [der]
    assert ca_certs(env("MQTT_TLS_CA_DER")) == [der]
    d = tmpdir("tls")
    with open(d + "/bundle.pem", "wb") as f:
        f.write(open(env("MQTT_TLS_ROGUE_CA"), "rb").read() + b"\n" + open(env("MQTT_TLS_CA"), "rb").read())
    certs = ca_certs(d + "/bundle.pem")
    assert len(certs) == 2 and certs[1] == der
    with open(d + "/junk.pem", "wb") as f:
        f.write(b"hello")
    raises(ValueError, ca_certs, d + "/junk.pem")


def test_context_requires_a_verified_certificate():
    import ssl
    ctx = tls_context(cfg("ctx"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED  # MicroPython's default would be CERT_NONE


def test_config_tls_keys_and_port_default():
    base = {"node_id": "n1", "api_key": "k", "mqtt_host": "h"}
    c = config.check(dict(base))
    assert c["mqtt_tls"] is False and c["mqtt_port"] == 1883
    c = config.check(dict(base, mqtt_tls=True, mqtt_ca_file=env("MQTT_TLS_CA")))
    assert c["mqtt_port"] == 8883
    c = config.check(dict(base, mqtt_tls=True, mqtt_ca_file=env("MQTT_TLS_CA_DER"), mqtt_port=18883))
    assert c["mqtt_port"] == 18883
    e = raises(config.ConfigError, config.check, dict(base, mqtt_tls="yes"))
    assert "mqtt_tls" in str(e)
    e = raises(config.ConfigError, config.check, dict(base, mqtt_tls=True))
    assert "mqtt_ca_file" in str(e)
    e = raises(config.ConfigError, config.check, dict(base, mqtt_tls=True, mqtt_ca_file="/nonexistent/ca.crt"))
    assert "mqtt_ca_file /nonexistent/ca.crt" in str(e)
    # an HTTP node needs no CA
    config.check({"node_id": "n1", "api_key": "k", "transport": "http", "server_url": "http://h",
                  "mqtt_tls": True})


class Ussl:
    """Saves sys.modules["ussl"] and puts it back, for the tests that change it."""

    def __init__(self, module=None):
        self.saved = sys.modules.get("ussl")
        if module is None:
            sys.modules.pop("ussl", None)
        else:
            sys.modules["ussl"] = module

    def restore(self):
        sys.modules.pop("ussl", None)
        if self.saved is not None:
            sys.modules["ussl"] = self.saved


def fake_transport(client, node="fake", ctx=None, **kw):
    b = Broker()
    ctx = ctx or FakeContext()
    t = MqttTransport(cfg(node, **kw), client_factory=lambda *a, **k: client(b, *a, **k),
                      log=print, tls_factory=lambda c: ctx)
    return b, ctx, t


def test_umqtt_1_4_api_gets_the_context_and_wraps_with_the_brokers_name():
    u = Ussl()
    try:
        b, ctx, t = fake_transport(FakeClient, host="broker.lab")
        assert t.ensure(0)
        c = b.clients[0]
        assert c.ssl is ctx and c.port == int(env("MQTT_TLS_PORT"))
        assert ctx.wrapped == ["broker.lab"] and c.sock is c
        assert not hasattr(c, "ssl_params") and "ussl" not in sys.modules  # no legacy path
        t._drop()
        assert t.ensure(1000) and ctx.wrapped == ["broker.lab", "broker.lab"]  # one context
    finally:
        u.restore()
    b2 = Broker()
    plain = {"node_id": "p", "api_key": "k", "mqtt_host": "h"}
    t2 = MqttTransport(config.check(plain), client_factory=lambda *a, **k: FakeClient(b2, *a, **k))
    assert t2.ensure(0) and b2.clients[0].ssl is None and b2.clients[0].port == 1883


def test_umqtt_1_3_api_gets_a_ussl_that_wraps_with_the_context():
    u = Ussl()
    try:
        b, ctx, t = fake_transport(LegacyFakeClient, host="broker.lab")
        assert t.ensure(0)
        c = b.clients[0]
        assert c.ssl is ctx  # truthy: 1.3.x's "use TLS"
        assert c.ssl_params == {"context": ctx, "server_hostname": "broker.lab"}
        assert isinstance(sys.modules["ussl"], UsslShim) and ctx.wrapped == ["broker.lab"]
        shim = sys.modules["ussl"]
        b2, ctx2, t2 = fake_transport(LegacyFakeClient, node="fake2")
        assert t2.ensure(0) and sys.modules["ussl"] is shim and ctx2.wrapped == ["127.0.0.1"]
    finally:
        u.restore()


def test_ussl_shim_refuses_anything_but_a_verifying_context():
    shim = UsslShim()
    ctx = FakeContext()
    assert shim.wrap_socket("sock", context=ctx, server_hostname="h") == "sock"
    raises(ValueError, shim.wrap_socket, "sock", server_hostname="h")  # e.g. urequests' call
    raises(ValueError, shim.wrap_socket, "sock", context=FakeContext(verify_mode=0), server_hostname="h")
    raises(ValueError, shim.wrap_socket, "sock", context=ctx)
    raises(ValueError, shim.wrap_socket, "sock", context=ctx, server_hostname="h", cert_reqs=0)
    assert ctx.wrapped == ["h"]


def test_umqtt_1_3_api_with_micropythons_own_ussl_is_told_to_verify():
    class OldUssl:  # MicroPython before 1.23
        def __init__(self):
            self.calls = []

        def wrap_socket(self, sock, **params):
            self.calls.append(params)
            return sock

    old = OldUssl()
    u = Ussl(old)
    try:
        b, ctx, t = fake_transport(LegacyFakeClient, ca_env="MQTT_TLS_CA")
        assert t.ensure(0) and sys.modules["ussl"] is old and ctx.wrapped == []
        with open(env("MQTT_TLS_CA_DER"), "rb") as f:
            der = f.read()
        assert old.calls == [{"cert_reqs": 2, "cadata": der, "server_hostname": "127.0.0.1"}]
    finally:
        u.restore()


class Umqtt14(MQTTClient):
    """umqtt.simple >= 1.4's TLS API over the 1.3.4 client installed here: `ssl` defaults to
    None and is an SSLContext, and connect() wraps the TCP socket with
    ssl.wrap_socket(sock, server_hostname=server), with no ussl and no ssl_params."""

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        MQTTClient.__init__(self, client_id, server, port, user, password, keepalive)
        self.ssl = ssl
        self.wrapped = []

    def connect(self, clean_session=True):
        assert self.ssl_params == {}, "legacy parameters for the >= 1.4 API"
        client = self

        class Wrap:  # 1.3.4's connect() calls ussl.wrap_socket(sock, **ssl_params) here
            def wrap_socket(self, sock):
                client.wrapped.append(client.server)
                return client.ssl.wrap_socket(sock, server_hostname=client.server)

        u = Ussl(Wrap())
        try:
            return MQTTClient.connect(self, clean_session)
        finally:
            u.restore()


def test_no_context_no_connection():
    b = Broker()
    log = []

    def broken(cfg):
        raise OSError(2)

    t = MqttTransport(cfg("noctx"), client_factory=lambda *a, **k: FakeClient(b, *a, **k),
                      log=log.append, tls_factory=broken)
    r = t.send(['{"seq": 1}'], 0)
    assert r.status == "error" and not b.clients and not b.connects
    assert any("TLS setup failed" in m for m in log)


def test_reading_over_tls_arrives_and_output_comes_back():
    cases = [("127.0.0.1", "MQTT_TLS_CA", None), ("localhost", "MQTT_TLS_CA_DER", None),
             ("127.0.0.1", "MQTT_TLS_CA_DER", Umqtt14), ("localhost", "MQTT_TLS_CA", Umqtt14)]
    for host, ca, client in cases:
        c = cfg("tls", host=host, ca_env=ca)
        sub = Sub("kaiabc/sensors/" + c["node_id"])
        log = []
        t = MqttTransport(c, client_factory=client, log=log.append)
        r = t.send(['{"seq": 1, "via": "%s"}' % host], 0)
        assert r.status == "ok" and r.done == 1, log
        assert "SSLSocket" in repr(t.client.sock)
        if client is None:  # PyPI's 1.3.4 went through the shim
            assert isinstance(sys.modules["ussl"], UsslShim)
            assert t.client.ssl_params == {"context": t._ctx, "server_hostname": host}
        else:
            assert t.client.wrapped == [host] and t.client.ssl is t._ctx
        got = sub.wait()
        assert got == [("kaiabc/sensors/" + c["node_id"], '{"seq": 1, "via": "%s"}' % host)], got
        # the retained output, published on the plain listener, comes back over TLS
        out = "kaiabc/nodes/%s/output" % c["node_id"]
        sub.c.publish(out, json.dumps({"pwm_duty": 77}), retain=True, qos=1)
        msgs = []
        deadline = time.time() + 5
        while not msgs and time.time() < deadline:
            msgs = t.poll(0)
            time.sleep(0.05)
        assert msgs == [{"pwm_duty": 77}], (msgs, log)
        sub.c.publish(out, "", retain=True, qos=1)
        sub.c.publish("kaiabc/nodes/%s/status" % c["node_id"], "", retain=True, qos=1)
        sub.close()
        t.client.disconnect()
        assert saw(c["node_id"])  # the log the fail-closed tests read is live


def fails_closed(c, expect, client=None):
    log = []
    t = MqttTransport(c, client_factory=client, log=log.append)
    r = t.send(['{"seq": 1}'], 0)
    assert r.status == "error" and r.done == 0 and not t.connected, (r.status, log)
    text = "\n".join(log)
    assert "connect (TLS) failed" in text and expect in text, log
    assert not saw(c["node_id"]), "the broker read a CONNECT"


UMQTT = ((None, ""), (Umqtt14, "14"))  # PyPI's 1.3.4 through the shim; the >= 1.4 API


def test_fails_closed_against_a_certificate_of_another_ca():
    for client, v in UMQTT:
        fails_closed(cfg("rogue" + v, port_env="MQTT_TLS_ROGUE_PORT"),
                     "not correctly signed by the trusted CA", client)


def test_fails_closed_when_the_configured_ca_is_not_the_brokers():
    for client, v in UMQTT:
        fails_closed(cfg("wrongca" + v, ca_env="MQTT_TLS_ROGUE_CA"),
                     "not correctly signed by the trusted CA", client)


def test_fails_closed_when_the_certificate_is_for_another_name():
    for client, v in UMQTT:
        fails_closed(cfg("wrongname" + v, port_env="MQTT_TLS_WRONGNAME_PORT"), "CN", client)


def test_does_not_fall_back_to_plain_mqtt():
    for client, v in UMQTT:
        fails_closed(cfg("noplain" + v, port_env="MQTT_PORT"), "Error", client)


class PrivateBroker:
    """A Mosquitto of this test's own with one TLS listener (the certificates of the one run.sh
    starts), to stop and start again on the same port under a live session."""

    def __init__(self, name):
        self.dir = tmpdir(name)
        certs = env("MQTT_TLS_CA").rsplit("/", 1)[0]
        os.system("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); "
                  "print(s.getsockname()[1])' > %s/port" % self.dir)
        with open(self.dir + "/port") as f:
            self.port = int(f.read())
        self.conf = self.dir + "/mosquitto.conf"
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n"
                    "tls_version tlsv1.2\n" % (self.port, certs, certs, certs))
        self.pid = None

    def listening(self):
        import socket
        s = socket.socket()
        try:
            s.connect(socket.getaddrinfo("127.0.0.1", self.port)[0][-1])
            return True
        except OSError:
            return False
        finally:
            s.close()

    def start(self):
        os.system("mosquitto -c %s >>%s.log 2>&1 & echo $! > %s.pid" % (self.conf, self.conf, self.conf))
        with open(self.conf + ".pid") as f:
            self.pid = int(f.read())
        for _ in range(100):
            if self.listening():
                return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not listen on %d" % self.port)

    def stop(self, sig):
        # -9: the TCP connection ends with no TLS close_notify, as when `kaiabc run` exits;
        # -TERM: Mosquitto sends close_notify first.
        os.system("kill -%s %d" % (sig, self.pid))
        for _ in range(100):
            if not self.listening():
                break
            time.sleep(0.05)
        time.sleep(0.2)


def ms_since(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def test_broker_outage_under_tls_is_noticed_at_once_and_the_node_reconnects():
    for sig in ("9", "TERM"):
        b = PrivateBroker("tls_outage")
        b.start()
        try:
            log = []
            t = MqttTransport(cfg("outage", port_env="MQTT_TLS_PORT", mqtt_port=b.port), log=log.append)
            now = 0
            assert t.send(['{"seq": 1}'], now).status == "ok", log
            # The broker goes away between steps: the node's poll notices, without blocking.
            b.stop(sig)
            t0 = time.ticks_ms()
            assert t.poll(now) == []
            assert not t.connected and ms_since(t0) < 1000, (sig, log, ms_since(t0))
            r = t.send(['{"seq": 2}'], now)  # down: an error, the reading stays buffered
            assert r.status == "error" and r.done == 0 and not t.connected, (sig, log)
            b.start()
            # Back: the transport reconnects once its backoff has passed.
            for now in range(1, 400):
                r = t.send(['{"seq": 2}'], now)
                if r.status == "ok":
                    break
            assert r.status == "ok" and t.connected, (sig, log)
            # It goes away again and the next call is a publish on the dead link.
            b.stop(sig)
            t0 = time.ticks_ms()
            r = t.send(['{"seq": 3}'], now)
            assert r.status == "error" and r.done == 0 and not t.connected, (sig, log)
            assert ms_since(t0) < 3000, (sig, ms_since(t0))
            b.start()
            start = now
            for now in range(start, start + 400):
                r = t.send(['{"seq": 3}'], now)
                if r.status == "ok":
                    break
            assert r.status == "ok" and t.connected, (sig, log)
            assert now - start <= 10, (sig, now - start, log)  # the first backoff steps, not more
            t.client.disconnect()
        finally:
            os.system("kill -TERM %d" % b.pid)
            time.sleep(0.2)
