#!/usr/bin/env python3
"""End to end: the real Pico and ELM11 firmware, run on their host interpreters, against a
real `kaiabc run` (embedded broker behind its login gate, HTTP API, Parquet lake).

Each node steps through simulated minutes on command (its clock is set by this driver, one
minute a step). Midway the server is stopped for a few minutes and started again on the same
lake. Then the lake must hold every node's readings exactly once, every output a node
applied must be one the server computed for that node, a node's final PWM duty must be its
clock's latest, and nodes with a wrong API key must have kept running, refused.

MQTT over TLS: the Mosquitto run has a TLS listener too (certificates from scripts/certs.sh),
and a Pico and an ELM11 send through it. A third run puts every node on the TLS port of
`kaiabc run` itself (--mqtt-tls-listen): it runs only once `kaiabc run --help` lists that flag,
and says why it was skipped otherwise. In both, nodes that trust another CA must never get a
reading in (no fallback to plain MQTT), and keep their readings and running.

Usage: run_e2e.py  (env: KAIABC_BIN, MICROPYTHON, MICROPYPATH for the Pico runner)
"""
import atexit
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FIRMWARE = os.path.dirname(os.path.dirname(HERE))
CERTS_SH = os.path.join(os.path.dirname(FIRMWARE), "scripts", "certs.sh")
SECRET = "e2e-secret-e2e-secret-e2e-secret-0123"
STEPS = 14
OUTAGE = range(5, 9)  # steps taken while the server is down
OVERRIDE_AT = 10  # a researcher holds each node's PWM at a duty of its own from this step
WRONG_KEY = "kab_00000000_" + "0" * 48


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Every process this driver starts, stopped at exit even when a check fails.
STARTED = []


def stop_all():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(stop_all)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Certs:
    """scripts/certs.sh in the run's directory: the broker's CA and certificate, and another CA
    (with a certificate for the same names) that no broker here uses."""

    def __init__(self, work):
        self.dir = os.path.join(work, "certs")
        for sub in ("good", "rogue"):
            out = subprocess.run(["bash", CERTS_SH, os.path.join(self.dir, sub), "127.0.0.1",
                                  "localhost"], capture_output=True, text=True)
            if out.returncode != 0:
                fail("scripts/certs.sh failed: %s" % out.stderr)
        self.ca = os.path.join(self.dir, "good", "ca.crt")
        self.cert = os.path.join(self.dir, "good", "server.crt")
        self.key = os.path.join(self.dir, "good", "server.key")
        self.rogue_ca = os.path.join(self.dir, "rogue", "ca.crt")
        # Mosquitto, started as root, reads them as its own user.
        for d in (self.dir, os.path.dirname(self.ca), os.path.dirname(self.rogue_ca)):
            os.chmod(d, 0o755)
        os.chmod(self.key, 0o644)


def server_has_mqtt_tls(binary):
    out = subprocess.run([binary, "run", "--help"], capture_output=True, text=True)
    return "--mqtt-tls-listen" in out.stdout + out.stderr


class Server:
    """`kaiabc run` on free loopback ports, with its embedded broker or an external one."""

    def __init__(self, binary, work, mqtt_url=None, mqtt_port=None, certs=None):
        self.binary = binary
        self.work = work
        self.http = free_port()
        self.mqtt_url = mqtt_url
        self.mqtt = mqtt_port or free_port()
        self.certs = certs  # with an embedded broker: also a TLS listener on mqtt_tls
        self.mqtt_tls = free_port() if certs and not mqtt_url else None
        self.proc = None
        self.runs = 0

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.http, path)

    def start(self):
        self.runs += 1
        log = open(os.path.join(self.work, "server-%d.log" % self.runs), "w")
        # The nodes' minutes pass in milliseconds here: a node's minute of the contract's rate
        # limits (100 readings, 60 queries) would be spent in a second, so they are lifted.
        env = dict(os.environ, KAIABC_JWT_SECRET=SECRET, RUST_LOG="info",
                   KAIABC_RATE_LIMIT_INGEST="1000000", KAIABC_RATE_LIMIT_QUERY="1000000",
                   KAIABC_RATE_LIMIT_CHANGE="1000000")
        broker = (["--mqtt-url", self.mqtt_url] if self.mqtt_url
                  else ["--mqtt-listen", "127.0.0.1:%d" % self.mqtt])
        if self.mqtt_tls:
            broker += ["--mqtt-tls-listen", "127.0.0.1:%d" % self.mqtt_tls,
                       "--mqtt-tls-cert", self.certs.cert, "--mqtt-tls-key", self.certs.key]
        self.proc = subprocess.Popen(
            [self.binary, "run", "--http", "127.0.0.1:%d" % self.http] + broker + [
             "--lake", os.path.join(self.work, "lake"),
             "--state-dir", os.path.join(self.work, "state"),
             "--commit-interval-seconds", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        STARTED.append(self.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail("kaiabc run exited with %s; see %s" % (self.proc.returncode, log.name))
            try:
                with urllib.request.urlopen(self.url("/v1/health"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        fail("kaiabc run did not answer /v1/health within 60 s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("kaiabc run did not stop within 60 s of SIGTERM")
        if code != 0:
            fail("kaiabc run exited with %d on SIGTERM" % code)

    def call(self, method, path, token, body=None):
        req = urllib.request.Request(self.url(path), method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", "Bearer " + token)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def query(self, sql):
        out = subprocess.run([self.binary, "query", "--lake", os.path.join(self.work, "lake"),
                              "--format", "json", sql], capture_output=True, text=True)
        if out.returncode != 0:
            fail("kaiabc query failed: %s" % out.stderr)
        text = out.stdout.strip()
        if not text:
            return []
        try:
            rows = json.loads(text)
        except ValueError:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return rows


class Node:
    """One firmware process, stepped over stdin."""

    def __init__(self, name, argv, env, work):
        self.name = name
        self.err = open(os.path.join(work, name + ".log"), "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=env, text=True)
        STARTED.append(self.proc)
        self.answers = []

    def send(self, cmd):
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        if not line:
            fail("%s: the firmware process died (exit %s) on %r; see %s"
                 % (self.name, self.proc.wait(), cmd, self.err.name))
        answer = json.loads(line)
        self.answers.append(answer)
        return answer

    def quit(self):
        bye = self.send("quit")
        if self.proc.wait(timeout=30) != 0:
            fail("%s exited with %d" % (self.name, self.proc.returncode))
        return bye


def pico_runner():
    mp = os.environ.get("MICROPYTHON")
    if not mp:
        fail("MICROPYTHON is not set: run through firmware/tests/e2e/run.sh")
    return [mp, os.path.join(HERE, "pico_host.py")], os.path.join(
        FIRMWARE, "tests", "reference", "vectors.json")


def write_config(work, name, cfg):
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def ts(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Mosquitto:
    """Mosquitto as the external broker, as deployed: logins from a password file, and an
    ACL that holds each node to its own topics (`pattern` lines with %u)."""

    def __init__(self, work, certs):
        self.work = work
        # Run as root, Mosquitto drops to its own user, which must still read these files.
        os.chmod(work, 0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.passwords = os.path.join(work, "mosquitto.passwd")
        self.server_password = os.urandom(12).hex()
        acl = os.path.join(work, "mosquitto.acl")
        with open(acl, "w") as f:
            f.write("user kaiabc-server\n"
                    "topic read kaiabc/sensors/#\n"
                    "topic read kaiabc/nodes/+/status\n"
                    "topic write kaiabc/nodes/+/output\n"
                    "pattern write kaiabc/sensors/%u\n"
                    "pattern write kaiabc/nodes/%u/status\n"
                    "pattern read kaiabc/nodes/%u/output\n")
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            # One password file and ACL for both listeners, as deploy/mosquitto/mosquitto.conf.
            f.write("per_listener_settings false\n"
                    "allow_anonymous false\npassword_file %s\nacl_file %s\npersistence false\n"
                    "listener %d 127.0.0.1\n"
                    "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                    "tls_version tlsv1.2\n"
                    % (self.passwords, acl, self.port, self.tls_port, certs.ca, certs.cert,
                       certs.key))
        self.add("kaiabc-server", self.server_password, create=True)
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", conf],
                                     stdout=open(os.path.join(work, "mosquitto.log"), "w"),
                                     stderr=subprocess.STDOUT)
        STARTED.append(self.proc)
        for port in (self.port, self.tls_port):
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        fail("mosquitto did not listen on %d" % port)
                    time.sleep(0.1)

    def url(self):
        return "mqtt://kaiabc-server:%s@127.0.0.1:%d" % (self.server_password, self.port)

    def add(self, user, password, create=False):
        argv = ["mosquitto_passwd", "-b"] + (["-c"] if create else []) + [
            self.passwords, user, password]
        if subprocess.run(argv, capture_output=True).returncode != 0:
            fail("mosquitto_passwd failed for %s" % user)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)  # rereads the password file
        time.sleep(0.5)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def scenario(title, binary, admin, external_broker, steps, outage, override_at, tls=False):
    """Runs every chosen node against one server through `steps` simulated minutes, with the
    server down for the steps in `outage`; checks the lake, outputs and refusals. With `tls`
    (embedded broker only) every node uses the server's MQTT TLS listener."""
    work = tempfile.mkdtemp(prefix="kaiabc-e2e-")
    certs = Certs(work)
    broker = Mosquitto(work, certs) if external_broker else None
    server = (Server(binary, work, mqtt_url=broker.url(), mqtt_port=broker.port) if broker
              else Server(binary, work, certs=certs if tls else None))
    server.start()

    def register(node_id):
        status, body = server.call("POST", "/v1/sensors/nodes", admin, {"node_id": node_id})
        if status != 201:
            fail("registering %s: %s %s" % (node_id, status, body))
        if broker:
            broker.add(node_id, body["api_key"])  # the operator's step with Mosquitto
        return body["api_key"]

    mp_argv, vectors = pico_runner()
    pico_cfg = lambda node_id, **kw: dict({
        "node_id": node_id, "mqtt_host": "127.0.0.1", "mqtt_port": server.mqtt,
        "server_url": server.url(""), "sample_interval_s": 60, "output_stale_s": 150,
        "buffer_capacity": 100, "buffer_path": os.path.join(work, node_id + ".ring"),
        "seq_path": os.path.join(work, node_id + ".seq")}, **kw)
    elm_cfg = lambda node_id, **kw: dict({
        "node_id": node_id, "server_url": server.url(""), "mqtt_host": "127.0.0.1",
        "mqtt_port": server.mqtt, "sample_interval_s": 60, "buffer_capacity": 100,
        "buffer_path": os.path.join(work, node_id + ".buf"),
        "seq_path": os.path.join(work, node_id + ".seq"),
        "bme280": {"address": 118, "mode": "forced", "osrs_t": 1, "osrs_p": 1, "osrs_h": 1,
                   "filter": 0, "standby_ms": 1000},
        "pwm": {"pin": 5, "freq": 1000}}, **kw)
    elm = lambda lua: [lua, os.path.join(HERE, "elm11_host.lua")]
    nodes = []
    only = os.environ.get("KAIABC_E2E_FIRMWARE", "pico,elm11").split(",")

    def pico(name, transport, **kw):
        if "pico" in only:
            path = write_config(work, name, pico_cfg(name, transport=transport, **kw))
            nodes.append(Node(name, mp_argv + [path, vectors], os.environ.copy(), work))

    def elm11(name, lua, transport, **kw):
        if "elm11" in only:
            path = write_config(work, name, elm_cfg(name, transport=transport, **kw))
            nodes.append(Node(name, elm(lua) + [path], os.environ.copy(), work))

    # MQTT over TLS: the CA from scripts/certs.sh (PEM; the Pico decodes it to DER itself).
    def over_tls(port, ca=certs.ca):
        return {"mqtt_tls": True, "mqtt_port": port, "mqtt_ca_file": ca}

    if tls:
        # Every node on the server's TLS listener, which takes the same node logins.
        on = lambda **kw: dict(over_tls(server.mqtt_tls), **kw)
        pico("t_pico_tls", "mqtt", api_key=register("t_pico_tls"), **on())
        elm11("t_elm_tls", "lua5.3", "mqtt", api_key=register("t_elm_tls"), **on())
        register("t_pico_bad")
        register("t_elm_bad")
        pico("t_pico_bad", "mqtt", api_key=WRONG_KEY, **on())
        elm11("t_elm_bad", "lua5.1", "mqtt", api_key=WRONG_KEY, **on())
        # Nodes that trust another CA: the handshake fails, nothing is sent in plain.
        pico("t_pico_untrusted", "mqtt", api_key=register("t_pico_untrusted"),
             **over_tls(server.mqtt_tls, certs.rogue_ca))
        elm11("t_elm_untrusted", "lua5.1", "mqtt", api_key=register("t_elm_untrusted"),
              **over_tls(server.mqtt_tls, certs.rogue_ca))
    elif broker:
        # Both firmwares' MQTT clients through Mosquitto; the server keeps a persistent
        # session there, so readings sent while it is down wait in Mosquitto.
        pico("m_pico_mqtt", "mqtt", api_key=register("m_pico_mqtt"))
        elm11("m_elm_mqtt", "lua5.3", "mqtt", api_key=register("m_elm_mqtt"))
        register("m_elm_bad")
        elm11("m_elm_bad", "lua5.1", "mqtt", api_key=WRONG_KEY)
        # And through Mosquitto's TLS listener (same logins and ACL).
        pico("m_pico_tls", "mqtt", api_key=register("m_pico_tls"), **over_tls(broker.tls_port))
        elm11("m_elm_tls", "lua5.1", "mqtt", api_key=register("m_elm_tls"),
              **over_tls(broker.tls_port))
        pico("m_pico_untrusted", "mqtt", api_key=register("m_pico_untrusted"),
             **over_tls(broker.tls_port, certs.rogue_ca))
        broker.reload()
    else:
        # The Pico over MQTT registers itself at first boot with a provisioning token.
        pico("e2e_pico_mqtt", "mqtt", provisioning_token=admin)
        pico("e2e_pico_http", "http", api_key=register("e2e_pico_http"))
        elm11("e2e_elm_http", "lua5.3", "http", api_key=register("e2e_elm_http"))
        elm11("e2e_elm_mqtt", "lua5.1", "mqtt", api_key=register("e2e_elm_mqtt"))
        # Registered, but configured with a wrong key.
        register("e2e_pico_bad")
        register("e2e_elm_bad")
        pico("e2e_pico_bad", "mqtt", api_key=WRONG_KEY)
        elm11("e2e_elm_bad", "lua5.3", "http", api_key=WRONG_KEY)
    if not nodes:
        fail("no firmware chosen (KAIABC_E2E_FIRMWARE=%s)" % ",".join(only))
    good = [n for n in nodes if not n.name.endswith(("_bad", "_untrusted"))]
    bad = [n for n in nodes if n.name.endswith("_bad")]
    untrusted = [n for n in nodes if n.name.endswith("_untrusted")]
    overrides = {n.name: 200 + k for k, n in enumerate(good)}

    start = int(time.time()) - (steps + 2) * 60
    for i in range(steps):
        if i == outage.start:
            server.stop()
        if i == outage.stop:
            server.start()
        if i == override_at:
            for n in good:
                status, body = server.call("POST", "/v1/output/manual-override", admin,
                                           {"node_id": n.name, "override_enabled": True,
                                            "pwm_value": overrides[n.name]})
                if status != 200 or not body.get("success"):
                    fail("manual override of %s: %s %s" % (n.name, status, body))
        for n in nodes:
            n.send("step %d" % (start + 60 * i))
        if i == outage.stop - 1 and not broker:
            for n in good:
                # The link is down: readings wait on the node, the output runs on.
                a = n.answers[-1]
                if a["buffered"] < len(outage):
                    fail("%s buffered %d readings in the outage" % (n.name, a["buffered"]))
                if a["mode"] != "offline" or a["duty"] is None:
                    fail("%s output in the outage: %s" % (n.name, a))
    time.sleep(1.0)
    finals = {}
    for n in good:
        a = n.send("poll %d" % (start + 60 * steps))
        if a["buffered"] != 0:
            fail("%s still buffers %d readings" % (n.name, a["buffered"]))
        status, state = server.call("GET", "/v1/oscillator/state?node_id=" + n.name, admin)
        if status != 200:
            fail("state of %s: %s %s" % (n.name, status, state))
        finals[n.name] = (a["duty"], state["output_pwm"], a["mode"])
    byes = {n.name: n.quit() for n in nodes}
    server.stop()
    if broker:
        broker.stop()

    print("-- %s" % title)
    for n in good:
        rows = server.query("SELECT seq FROM readings WHERE node_id = '%s' ORDER BY seq" % n.name)
        seqs = [int(r["seq"]) for r in rows]
        if seqs != list(range(1, steps + 1)):
            fail("%s: readings in the lake %s, want 1..%d once each" % (n.name, seqs, steps))
        states = server.query("SELECT CAST(timestamp AS VARCHAR) AS t, output_pwm FROM states "
                              "WHERE node_id = '%s'" % n.name)
        duty_at = {ts(r["t"]).timestamp(): int(r["output_pwm"]) for r in states}
        applied = [x for a in n.answers for x in a.get("applied", [])]
        after = [x for a in n.answers[outage.stop:] for x in a.get("applied", [])]
        if not applied or not after:
            fail("%s applied no output (%d in all, %d after the outage)"
                 % (n.name, len(applied), len(after)))
        for x in applied:
            want = duty_at.get(ts(x["timestamp"]).timestamp())
            if want != x["pwm_duty"]:
                fail("%s applied duty %s for %s; the server's state says %s"
                     % (n.name, x["pwm_duty"], x["timestamp"], want))
        duty, server_duty, mode = finals[n.name]
        if duty != server_duty or duty != overrides[n.name] or mode != "online":
            fail("%s ends at duty %s (%s); its clock's output is %s, the override %d"
                 % (n.name, duty, mode, server_duty, overrides[n.name]))
        duties = sorted(set(x["pwm_duty"] for x in applied))
        print("%s: readings 1..%d once each, %d outputs applied (%d after the outage; "
              "duties %s), final duty %d = server's" % (
                  n.name, steps, len(applied), len(after), duties, duty))
    for n in bad:
        a = n.answers[-2]  # the last step before quit
        stats = byes[n.name]["stats"]
        if a["buffered"] != steps or stats.get("auth_failures", 0) < 1:
            fail("%s with a wrong key: %s, %s" % (n.name, a, stats))
        rows = server.query("SELECT count(*) AS n FROM readings WHERE node_id = '%s'" % n.name)
        if int(rows[0]["n"]) != 0:
            fail("%s got readings in with a wrong key" % n.name)
        print("%s: wrong key refused %d times, %d readings kept, still running"
              % (n.name, stats["auth_failures"], a["buffered"]))
    for n in untrusted:
        a = n.answers[-2]
        stats = byes[n.name]["stats"]
        if a["buffered"] != steps or stats.get("auth_failures", 0) != 0:
            fail("%s trusting another CA: %s, %s" % (n.name, a, stats))
        rows = server.query("SELECT count(*) AS n FROM readings WHERE node_id = '%s'" % n.name)
        if int(rows[0]["n"]) != 0:
            fail("%s got readings in past a certificate it must not trust" % n.name)
        n.err.flush()
        with open(n.err.name) as f:
            log = f.read()
        why = [w for w in ("not correctly signed by the trusted CA", "certificate verify failed")
               if w in log]
        if not why:
            fail("%s: no certificate error in its log %s" % (n.name, n.err.name))
        print("%s: broker's certificate refused (%s), %d readings kept, still running"
              % (n.name, why[0], a["buffered"]))
    # Kept when a check failed (the logs say why); removed once every check held.
    shutil.rmtree(work, ignore_errors=True)
    return len(nodes)


def main():
    binary = os.environ.get("KAIABC_BIN")
    if not binary or not os.path.exists(binary):
        fail("KAIABC_BIN must name the kaiabc binary")
    admin = subprocess.run([binary, "token", "--role", "admin", "--subject", "e2e", "--ttl", "1h"],
                           capture_output=True, text=True,
                           env=dict(os.environ, KAIABC_JWT_SECRET=SECRET)).stdout.strip()
    n = scenario("embedded broker (node logins) and HTTP", binary, admin, False, STEPS, OUTAGE,
                 OVERRIDE_AT)
    m = scenario("Mosquitto with a password file and ACLs, plain and TLS listeners", binary,
                 admin, True, 8, range(3, 5), 6)
    if server_has_mqtt_tls(binary):
        # The first run's steps and outage: the outage check wants every node on its offline
        # curve by the last step down, and the ELM11 counts its output live for 3 sample
        # intervals after the last one (the Mosquitto run skips that check); after 4 steps
        # down, the ELM11's backoff (1, 2, 4 intervals) retries in time to flush.
        t = scenario("embedded broker's TLS listener (--mqtt-tls-listen)", binary, admin, False,
                     STEPS, OUTAGE, OVERRIDE_AT, tls=True)
        print("e2e: ok (%d + %d + %d nodes; the server stopped and restarted in each run)"
              % (n, m, t))
    else:
        print("e2e: SKIPPED the run on kaiabc run's MQTT TLS listener: `%s run --help` lists no "
              "--mqtt-tls-listen (the server has no MQTT TLS listener yet)" % binary)
        print("e2e: ok (%d + %d nodes; the server stopped and restarted in each run)" % (n, m))


if __name__ == "__main__":
    main()
