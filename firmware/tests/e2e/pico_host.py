# Runs the real Pico firmware (app.build, real umqtt.simple / urequests sockets) on the
# MicroPython Unix port against a real server, one step per stdin command, with a
# simulated BME280 and PWM (tests/pico/fakes/machine.py) and a clock the driver sets.
#
# Commands: "step T" (sample, send, apply output at UTC T), "poll T" (fetch and apply the
# output only), "quit". Each answers with one JSON line on stdout; logs go to stderr.
import json
import sys
import time
from binascii import unhexlify

import app
import config
import machine


def log(m):
    sys.stderr.write("pico: %s\n" % (m,))


def main(path, vectors):
    with open(path) as f:
        raw = json.load(f)
    cfg = config.check(raw)
    if not cfg.get("api_key"):
        import urequests
        try:
            ok = app.provision(cfg, raw, path, urequests, log)
        except app.ProvisionError as e:
            log("provision: %s" % e)
            ok = False
        if not ok:
            print(json.dumps({"event": "unprovisioned"}))
            return 3
    with open(vectors) as f:
        s0 = json.load(f)["sets"][0]
    dev = machine.FakeBME280(unhexlify(s0["calib_88_a1_hex"]), unhexlify(s0["calib_e1_e7_hex"]),
                             unhexlify(s0["cases"][0]["data_hex"]), busy_reads=0)
    machine.I2C.default_devices = {cfg["bme280"]["address"]: dev}
    now = [0]
    clock = lambda: now[0]
    node = app.build(cfg, machine, clock, lambda s: None, log)
    applied = []
    on_message = node.output.on_message

    def record(msg, t):
        ok = on_message(msg, t)
        if ok:
            applied.append({"timestamp": msg.get("timestamp"), "seq": msg.get("seq"),
                            "pwm_duty": msg.get("pwm_duty")})
        return ok

    node.output.on_message = record
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        words = line.split()
        if not words:
            continue
        seq = None
        if words[0] == "quit":
            print(json.dumps({"event": "bye", "stats": node.stats}))
            return 0
        now[0] = int(words[1])
        if words[0] == "step":
            before = node.seq.peek()
            try:
                node.step()
            except Exception as e:  # the device's loop survives the same way (app.main)
                log("step failed: %r" % (e,))
            seq = before if node.seq.peek() > before else None
        elif words[0] == "poll":
            # The output is published just after the reading is applied: wait for it.
            deadline = time.time() + 1.5
            while True:
                up = cfg["transport"] != "mqtt" or node.transport.ensure(now[0])
                if up:
                    for msg in node.transport.poll(now[0]):
                        node.output.on_message(msg, now[0])
                if applied or time.time() > deadline:
                    break
                time.sleep(0.05)
            node.output.tick(now[0], node.transport.connected)
        else:
            log("unknown command %r" % line)
            continue
        print(json.dumps({"event": words[0], "seq": seq, "buffered": len(node.buffer),
                          "duty": node.output.duty, "mode": node.output.mode,
                          "stats": node.stats, "applied": applied}))
        applied = []


sys.exit(main(sys.argv[1], sys.argv[2]))
