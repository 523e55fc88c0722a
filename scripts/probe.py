#!/usr/bin/env python3
"""A hostile probe of `kaiabc run`: acts as an attacker and as careless clients would, beside a
valid node, and prints one line per attack with what the server did and whether it held.

    python3 scripts/probe.py --kaiabc target/release/kaiabc

It starts its own server on loopback ports with a fresh lake and stops it at the end; the
valid node keeps posting throughout, and at the end every reading it was answered 202 for
must be in the lake exactly once. Nothing here is timed against a bound: latencies and RSS
are printed for a person to read. Standard library only.
"""

import argparse
import base64
import concurrent.futures
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, headers=None, body=b"", src="127.0.0.1", timeout=15, raw=None):
    """One request on its own connection: (status, headers dict, body bytes); (0, {}, b"")
    when the connection failed or was closed without an answer."""
    if isinstance(body, str):
        body = body.encode()
    try:
        s = socket.socket()
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        if raw is None:
            head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            for k, v in (headers or {}).items():
                head += f"{k}: {v}\r\n"
            if body or method == "POST":
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            raw = head.encode() + b"\r\n" + body
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return 0, {}, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, data
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def now_iso(offset_s=0):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def health(port):
    t = time.perf_counter()
    status, _, _ = http(port, "GET", "/v1/health", timeout=30)
    return status, (time.perf_counter() - t) * 1e3


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


class Server:
    def __init__(self, kaiabc, extra=()):
        self.kaiabc = kaiabc
        self.dir = tempfile.mkdtemp(prefix="kaiabc-probe-")
        self.http = free_port()
        self.mqtt = free_port()
        self.env = dict(os.environ, KAIABC_JWT_SECRET=secrets.token_hex(32), RUST_LOG="info")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [kaiabc, "run", "--http", f"127.0.0.1:{self.http}", "--mqtt-listen",
             f"127.0.0.1:{self.mqtt}", "--lake", os.path.join(self.dir, "lake"),
             "--commit-interval-seconds", "2", *extra],
            cwd=self.dir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(600):
            if health(self.http)[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the server did not come up; see " + self.log.name)

    def token(self, role):
        out = subprocess.run([self.kaiabc, "token", "--role", role, "--subject", "probe",
                              "--ttl", "1h"], env=self.env, capture_output=True, text=True,
                             check=True)
        return out.stdout.strip().split()[-1]

    def register(self, node):
        status, _, body = http(self.http, "POST", "/v1/sensors/nodes",
                               {"Authorization": "Bearer " + self.token("admin")},
                               json.dumps({"node_id": node}))
        assert status == 201, (status, body)
        return json.loads(body)["api_key"]

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        self.log.close()
        return code

    def remove(self):
        """Removes the server's directory (lake and log), once it is stopped and nothing
        failed: a failure's directory is kept for its log."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql):
        out = subprocess.run([self.kaiabc, "query", sql, "--lake", os.path.join(self.dir, "lake"),
                              "--format", "json"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def log_lines(self):
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            return sum(1 for _ in f)


class ValidNode(threading.Thread):
    """Posts one reading every 0.6 s (100 a minute, under a key's 120) and counts what was
    acknowledged (by seq)."""

    def __init__(self, port, node, key):
        super().__init__(daemon=True)
        self.port, self.node, self.key = port, node, key
        self.acked, self.refused, self.stop = set(), 0, threading.Event()

    def run(self):
        seq = 0
        while not self.stop.is_set():
            seq += 1
            body = json.dumps({"node_id": self.node, "seq": seq, "timestamp": now_iso(),
                               "temperature_kelvin": 300.0, "sensor_type": "BME280"})
            status, _, _ = http(self.port, "POST", "/v1/sensors/temperature",
                                {"X-API-Key": self.key}, body)
            if status == 202 or status == 200:
                self.acked.add(seq)
            else:
                self.refused += 1
            time.sleep(0.6)


def ws_frame(text):
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def ws_open(port, token):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head, head
    return s


def mqtt_connect_packet(client, user, password, flags_extra=0):
    def s(x):
        return struct.pack("!H", len(x)) + x
    var = s(b"MQTT") + bytes([4, 0xC2 | flags_extra]) + struct.pack("!H", 30)
    payload = s(client.encode()) + s(user.encode()) + s(password.encode())
    body = var + payload
    return bytes([0x10]) + remaining(len(body)) + body


def remaining(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_publish(topic, payload, pkid):
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", pkid) + payload
    return bytes([0x32]) + remaining(len(body)) + body


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kaiabc", required=True)
    ap.add_argument("--idle", type=int, default=6000, help="idle connections to open")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    srv = Server(a.kaiabc)
    pid = srv.proc.pid
    key = srv.register("probe_ok")
    rogue_key = srv.register("probe_rogue")
    node = ValidNode(srv.http, "probe_ok", key)
    node.start()
    rows = []

    def report(finding, result, held):
        rows.append((finding, result, held))
        print(f"{'held' if held else 'FAILED'} | {finding} | {result}", flush=True)

    # 1. Idle connections from one address, beyond its share and the server's cap.
    idle = []
    for _ in range(a.idle):
        try:
            s = socket.socket()
            s.settimeout(2)
            s.bind(("127.0.0.4", 0))
            s.connect(("127.0.0.1", srv.http))
            idle.append(s)
        except OSError:
            break
    time.sleep(3)
    h_status, h_ms = health(srv.http)
    before = len(node.acked)
    time.sleep(3)
    during = len(node.acked) - before
    for s in idle:
        s.close()
    time.sleep(1)
    report(f"{len(idle)} idle connections from one address",
           f"health from another address during: {h_status} in {h_ms:.1f} ms; the valid node "
           f"acked {during} in 3 s during; RSS {rss_mb(pid):.0f} MB",
           h_status == 200 and during > 0)

    # 2. A reading dated 1700, then current ones: refused, and no stall.
    old = json.dumps({"node_id": "probe_rogue", "timestamp": "1700-01-01T00:00:00Z",
                      "temperature_kelvin": 300.0})
    st, _, body = http(srv.http, "POST", "/v1/sensors/temperature", {"X-API-Key": rogue_key}, old)
    t = time.perf_counter()
    cur = json.dumps({"node_id": "probe_rogue", "timestamp": now_iso(),
                      "temperature_kelvin": 300.0})
    st2, _, _ = http(srv.http, "POST", "/v1/sensors/temperature", {"X-API-Key": rogue_key}, cur)
    report("reading dated 1700, then a current one",
           f"{st} {json.loads(body or b'{}').get('error', {}).get('code')}; then {st2} in "
           f"{(time.perf_counter() - t) * 1e3:.0f} ms; RSS {rss_mb(pid):.0f} MB",
           st in (400, 422) and st2 in (200, 202))

    # 3. Wrong keys with a valid key id: 128 at once from one address, then from 128 addresses.
    def wrong(i, src):
        return http(srv.http, "POST", "/v1/sensors/temperature",
                    {"X-API-Key": f"{rogue_key[:-4]}{i:04d}"}, cur, src=src)[0]

    for label, src_of in (("one address", lambda i: "127.0.0.3"),
                          ("128 addresses", lambda i: f"127.0.1.{i + 1}")):
        peak, hs = 0.0, []
        with concurrent.futures.ThreadPoolExecutor(128) as ex:
            futs = [ex.submit(wrong, i, src_of(i)) for i in range(128)]
            while not all(f.done() for f in futs):
                peak = max(peak, rss_mb(pid))
                hs.append(health(srv.http)[1])
            codes = sorted({f.result() for f in futs})
        report(f"128 concurrent wrong keys from {label}",
               f"answers {codes}; health median {median(hs):.1f} ms; peak RSS {peak:.0f} MB",
               all(c in (401, 429) for c in codes))
    # A key verified before costs no check and passes; a key never checked waits out the block.
    st = http(srv.http, "POST", "/v1/sensors/temperature", {"X-API-Key": rogue_key}, cur,
              src="127.0.0.3")[0]
    new_key = srv.register("probe_new")
    new = json.dumps({"node_id": "probe_new", "timestamp": now_iso(), "temperature_kelvin": 300.0})
    st_new = http(srv.http, "POST", "/v1/sensors/temperature", {"X-API-Key": new_key}, new,
                  src="127.0.0.3")[0]
    report("from the address that failed 128 times: a key verified before / a new key",
           f"{st} / {st_new}", st == 202 and st_new == 429)

    # 4. One observer sending 15 messages of 10 000 patterns each.
    ws = ws_open(srv.http, srv.token("observer"))
    msg = json.dumps({"action": "subscribe",
                      "streams": [f"oscillator.state.n{i}" for i in range(10000)]})
    hs = []
    for _ in range(15):
        try:
            ws.sendall(ws_frame(msg))
        except OSError:
            break
        hs.append(health(srv.http)[1])
    ws.settimeout(5)
    try:
        answer = ws.recv(4096)
    except OSError:
        answer = b""
    ws.close()
    report("15 WebSocket messages of 10 000 patterns",
           f"health median {median(hs):.1f} ms; the server said "
           f"{answer[2:200].decode(errors='replace')!r}",
           b"TOO_MANY_STREAMS" in answer or b"too large" in answer.lower() or answer == b"")

    # 5. A flood of refused MQTT publishes, without reading.
    lines_before, rss_before = srv.log_lines(), rss_mb(pid)
    s = socket.create_connection(("127.0.0.1", srv.mqtt))
    s.sendall(mqtt_connect_packet("flood", "probe_rogue", rogue_key))
    pkt = b"".join(mqtt_publish("kaiabc/sensors/probe_ok", b"{}", i % 65535 + 1)
                   for i in range(1000))
    t, sent = time.time(), 0
    try:
        while time.time() - t < 5:
            s.sendall(pkt)
            sent += 1000
    except OSError:
        pass
    s.close()
    time.sleep(1)
    report("5 s flood of refused MQTT publishes",
           f"{sent} sent before the server closed; +{srv.log_lines() - lines_before} log lines; "
           f"RSS {rss_before:.0f} → {rss_mb(pid):.0f} MB",
           srv.log_lines() - lines_before < 1000)

    # 6. MQTT CONNECT with the reserved flag.
    s = socket.create_connection(("127.0.0.1", srv.mqtt), timeout=5)
    s.sendall(mqtt_connect_packet("bad", "probe_rogue", rogue_key, flags_extra=0x01))
    try:
        got = s.recv(16)
    except OSError:
        got = b""
    s.close()
    report("MQTT CONNECT with the reserved flag set", f"answer {got!r} (closed: b'')", got == b"")

    # 7. ?token= with a junk Authorization each time: one bucket.
    tok = srv.token("observer")
    codes = {}
    for i in range(700):
        st = http(srv.http, "GET", f"/v1/oscillator/state?token={tok}",
                  {"Authorization": f"Junk {i}"})[0]
        codes[st] = codes.get(st, 0) + 1
    report("700 requests, ?token= with a different junk Authorization",
           f"answers {codes} (the limit is 600 a minute)", codes.get(429, 0) > 0)

    # 8. A chunked reading, and the dashboard's headers.
    one = json.dumps({"node_id": "probe_rogue", "timestamp": now_iso(),
                      "temperature_kelvin": 301.0}).encode()
    raw = (f"POST /v1/sensors/temperature HTTP/1.1\r\nHost: x\r\nX-API-Key: {rogue_key}\r\n"
           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
           "Connection: close\r\n\r\n").encode() + f"{len(one):x}\r\n".encode() + one + \
        b"\r\n0\r\n\r\n"
    st = http(srv.http, "POST", "", raw=raw)[0]
    _, hd, _ = http(srv.http, "GET", "/")
    report("a chunked reading; the dashboard's headers",
           f"{st}; CSP {'content-security-policy' in hd}, X-Frame-Options "
           f"{hd.get('x-frame-options')}", st in (200, 202) and hd.get("x-frame-options") == "DENY")

    node.stop.set()
    node.join()
    code = srv.stop()
    got = srv.query("SELECT seq, count(*) AS n FROM readings WHERE node_id = 'probe_ok' "
                    "GROUP BY seq")
    in_lake = {r["seq"]: r["n"] for r in got}
    lost = [q for q in node.acked if in_lake.get(q) != 1]
    report("every acknowledged reading of the valid node in the lake once",
           f"{len(node.acked)} acknowledged, {node.refused} refused, {len(lost)} lost or "
           f"doubled; exit code {code}", not lost and code == 0)
    print("\n| attack | what the server did | held |\n|---|---|---|")
    for f, r, h in rows:
        print(f"| {f} | {r} | {'yes' if h else '**no**'} |")
    held = all(h for _, _, h in rows)
    if held:
        srv.remove()
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()
