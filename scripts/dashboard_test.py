#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven over WebDriver (selenium) against a real `kaiabc run`.

Logs in with a token, picks a node, sees its values change live while readings are posted,
holds its PWM from the control panel and sees the new duty arrive, opens the fleet page (the
node's group and synchrony, the node on the circadian-time dial, the alerts) and goes from it
back to the node, checks an observer sees no controls and a bad token is refused, and saves
screenshots.

Usage: scripts/dashboard.sh  (env: KAIABC_SCREENSHOT, default $CARGO_TARGET_DIR/dashboard.png)
"""
import datetime as dt
import json
import math
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

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

SECRET = "dashboard-secret-dashboard-secret-0123"
WAIT = 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    binary = os.environ["KAIABC_BIN"]
    work = tempfile.mkdtemp(prefix="kaiabc-dash-")
    http = free_port()
    base = "http://127.0.0.1:%d" % http
    env = dict(os.environ, KAIABC_JWT_SECRET=SECRET)
    server = subprocess.Popen(
        [binary, "run", "--http", "127.0.0.1:%d" % http, "--mqtt-listen",
         "127.0.0.1:%d" % free_port(), "--lake", work + "/lake", "--state-dir", work + "/state"],
        stdout=open(work + "/server.log", "w"), stderr=subprocess.STDOUT, env=env)
    try:
        run(binary, base, env, work)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # Kept when a check failed (its log and screenshot say why); removed once every check held.
    shutil.rmtree(work, ignore_errors=True)


def token(binary, env, role):
    return subprocess.run([binary, "token", "--role", role, "--subject", "dash-" + role,
                           "--ttl", "1h"], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


def call(base, method, path, body, headers):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


def call_get(base, path, tok):
    req = urllib.request.Request(base + path)
    req.add_header("Authorization", "Bearer " + tok)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def run(binary, base, env, work):
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/v1/health", timeout=1)
            break
        except OSError:
            if time.time() > deadline:
                fail("kaiabc run did not start; see " + work)
            time.sleep(0.2)
    admin, researcher, observer = (token(binary, env, r)
                                   for r in ("admin", "researcher", "observer"))
    _, reg = call(base, "POST", "/v1/sensors/nodes", {"node_id": "dash1"},
                  {"Authorization": "Bearer " + admin})
    key = reg["api_key"]
    seq = [0]
    t0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)

    def post(kelvin):
        seq[0] += 1
        ts = (t0 + dt.timedelta(minutes=5 * seq[0])).strftime("%Y-%m-%dT%H:%M:%SZ")
        status, body = call(base, "POST", "/v1/sensors/batch",
                            [{"node_id": "dash1", "seq": seq[0], "timestamp": ts,
                              "temperature_kelvin": kelvin}], {"X-API-Key": key})
        if status not in (200, 202) or body["accepted"] != 1:
            fail("posting a reading: %s %s" % (status, body))

    for k in (297.0, 297.5, 298.0):
        post(k)

    # A second node with three days of a 24 h temperature cycle (every 20 min), for the
    # scalogram.
    _, reg2 = call(base, "POST", "/v1/sensors/nodes", {"node_id": "dash2"},
                   {"Authorization": "Bearer " + admin})
    # The last one 5 minutes ago, so that dash2 is online on the fleet page too.
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=71, minutes=45)
    cycle = [{"node_id": "dash2", "seq": i + 1,
              "timestamp": (start + dt.timedelta(minutes=20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "temperature_kelvin": 300.0 + 3.0 * math.sin(2 * math.pi * i / 72.0)}
             for i in range(216)]
    for i in range(0, len(cycle), 50):
        status, body = call(base, "POST", "/v1/sensors/batch", cycle[i:i + 50],
                            {"X-API-Key": reg2["api_key"]})
        if status not in (200, 202) or body["accepted"] != len(cycle[i:i + 50]):
            fail("posting dash2's readings: %s %s" % (status, body))
    # Until the lake has committed them (every 10 s), the scalogram has nothing to show.
    deadline = time.time() + 60
    while True:
        _, w = call_get(base, "/v1/analytics/wavelet?node_id=dash2&variable=temperature_kelvin",
                        admin)
        if w.get("power"):
            break
        if time.time() > deadline:
            fail("dash2's states never reached the lake: %s" % w)
        time.sleep(1)

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    # The dashboard re-renders its panels on every state update, so an element found a moment
    # ago can be gone by the time its text is read; a wait simply tries again.
    wait = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))
    try:
        def type_into(el, text):
            # Chromium 156's headless driver drops WebDriver key events (send_keys leaves the
            # field empty here); the DevTools protocol's insertText goes through the browser's
            # own input pipeline, as a paste would.
            el.click()
            driver.execute_cdp_cmd("Input.insertText", {"text": text})

        def value(label):
            # Read outside a wait too (before and after a reading), so it tries again itself
            # when the panel is redrawn between finding the value and reading its text.
            for _ in range(50):
                try:
                    el = driver.find_elements(By.CSS_SELECTOR, '.val[data-key="%s"] b' % label)
                    return el[0].text if el else None
                except StaleElementReferenceException:
                    time.sleep(0.02)
            fail("the value %r was redrawn under every read" % label)

        def login(tok):
            driver.get(base + "/")
            driver.execute_script("sessionStorage.clear()")
            driver.get(base + "/")
            box = wait.until(lambda d: d.find_element(By.ID, "token"))
            type_into(box, tok)
            driver.find_element(By.ID, "signin").click()

        # A bad token is refused on the page.
        login("not-a-token")
        wait.until(lambda d: "Refused" in d.find_element(By.ID, "login-msg").text)

        # A researcher logs in, picks the node, sees it live.
        login(researcher)
        row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr.node[data-node="dash1"]'))
        row.click()
        wait.until(lambda d: value("KOA") not in (None, "–"))
        # The periodogram panel answers (three readings are too few for a peak: it says so).
        wait.until(lambda d: "states" in d.find_element(By.ID, "period").text)
        print("periodogram: " + driver.find_element(By.ID, "period").text)

        # The scalogram of dash2's temperature: drawn, and its strongest period is the 24 h of
        # the cycle its readings follow (the wavelet scales are 6 % apart).
        driver.find_element(By.CSS_SELECTOR, 'tr.node[data-node="dash2"]').click()
        Select(driver.find_element(By.ID, "w-var")).select_by_value("temperature_kelvin")
        try:
            wait.until(lambda d: "strongest period" in d.find_element(By.ID, "wavelet").text)
        except Exception:
            fail("no scalogram: %s" % driver.find_element(By.ID, "wavelet").text)
        text = driver.find_element(By.ID, "wavelet").text
        strongest = float(text.split("strongest period ")[1].split(" h")[0])
        if abs(strongest - 24.0) > 2.0:
            fail("the scalogram's strongest period is %s h: %s" % (strongest, text))
        painted = driver.execute_script(
            "const c = document.getElementById('c-wave'), d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;")
        if painted < 100000:
            fail("the scalogram canvas is nearly blank (%d pixels painted)" % painted)
        print("scalogram: " + text)
        scalogram_shot = os.path.join(os.path.dirname(os.environ.get("KAIABC_SCREENSHOT", "dashboard.png")) or ".",
                                      "dashboard-scalogram.png")
        driver.find_element(By.ID, "c-wave").screenshot(scalogram_shot)
        print("screenshot: " + scalogram_shot)
        Select(driver.find_element(By.ID, "w-var")).select_by_value("koa_metric")
        driver.find_element(By.CSS_SELECTOR, 'tr.node[data-node="dash1"]').click()
        wait.until(lambda d: value("KOA") not in (None, "–"))
        before = (value("raw temperature (°C)"), value("circadian time (h)"))
        post(298.6)
        wait.until(lambda d: value("raw temperature (°C)") == "25.45")
        after = (value("raw temperature (°C)"), value("circadian time (h)"))
        if after[1] == before[1]:
            fail("the clock did not move: %s -> %s" % (before, after))
        print("live: raw temperature, CT %s -> %s" % (before, after))

        # A control: hold the PWM at 200, then see the duty the clock sends.
        if not driver.find_element(By.ID, "controls").is_displayed():
            fail("a researcher sees no controls")
        pwm = driver.find_element(By.ID, "ov-pwm")
        pwm.clear()
        type_into(pwm, "200")
        driver.find_element(By.ID, "ov-set").click()
        wait.until(lambda d: d.find_element(By.ID, "ctl-msg").text.startswith("Sent"))
        post(298.8)
        wait.until(lambda d: value("PWM duty") == "200")
        print("control: PWM held at %s" % value("PWM duty"))
        # Settings: load the node's Kalman filter parameters, change one, save.
        Select(driver.find_element(By.ID, "set-group")).select_by_value("/v1/filter/parameters")
        driver.find_element(By.ID, "set-load").click()
        wait.until(lambda d: "gate_good" in d.find_element(By.ID, "set-json").get_attribute("value"))
        edited = json.loads(driver.find_element(By.ID, "set-json").get_attribute("value"))
        edited["gate_good"] = 0.9
        driver.execute_script("document.getElementById('set-json').value = arguments[0]",
                              json.dumps(edited))
        driver.find_element(By.ID, "set-save").click()
        wait.until(lambda d: '"gate_good":0.9' in d.find_element(By.ID, "ctl-msg").text)
        _, filt = call_get(base, "/v1/filter/parameters?node_id=dash1", admin)
        if filt["parameters"]["gate_good"] != 0.9:
            fail("the saved filter setting is not the node's: %s" % filt)
        print("settings: gate_good saved as 0.9")
        driver.execute_script("window.scrollTo(0, 0)")
        shot = os.environ.get("KAIABC_SCREENSHOT", "dashboard.png")
        driver.save_screenshot(shot)
        print("screenshot: " + shot)

        # The fleet page: the nodes' group with its synchrony, both nodes on the circadian-time
        # dial, the alert list; clicking a node opens its page.
        driver.find_element(By.ID, "tab-fleet").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#f-groups tr[data-group="unassigned"]'))
        wait.until(lambda d: d.find_element(By.ID, "f-dial").get_attribute("data-dots") == "2")
        group = driver.find_element(By.CSS_SELECTOR, '#f-groups tr[data-group="unassigned"]').text
        alerts = driver.find_element(By.ID, "f-alerts").text
        if not alerts:
            fail("the fleet page shows no alert list")
        print("fleet: group row %r; alerts: %r" % (group, alerts[:80]))
        fleet_shot = shot[:-4] + "-fleet.png" if shot.endswith(".png") else shot + "-fleet.png"
        driver.save_screenshot(fleet_shot)
        print("screenshot: " + fleet_shot)
        driver.find_element(By.CSS_SELECTOR, '#f-nodes tr[data-node="dash1"]').click()
        wait.until(lambda d: d.find_element(By.ID, "app").is_displayed()
                   and d.find_element(By.ID, "node-title").text == "Node dash1")
        print("fleet: the node's row opens its page")

        # An observer sees the nodes but no controls.
        login(observer)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr.node[data-node="dash1"]'))
        if driver.find_element(By.ID, "controls").is_displayed():
            fail("an observer sees the controls")
        print("observer: no controls")
    except Exception:
        driver.save_screenshot(work + "/failure.png")
        print("page at failure: %s; console: %s" % (
            driver.find_element(By.TAG_NAME, "body").text[:600],
            driver.get_log("browser")[-5:]), file=sys.stderr)
        raise
    finally:
        driver.quit()
    print("dashboard: ok")


if __name__ == "__main__":
    main()
