# MQTT (umqtt.simple, QoS 1; over TLS with "mqtt_tls") and HTTP (urequests) transports.
# send(batch) takes serialized readings (oldest first) and returns a Result:
#   status "ok"    -> remove `done` entries from the buffer (accepted or
#                     rejected-as-bad-data by the server)
#   status "auth"  -> wrong credentials: keep everything, back off
#   status "rate"  -> rate limited: keep, retry after `retry_after` s
#   status "error" -> network / 5xx: keep, retry later
import json
from binascii import a2b_base64
from backoff import Backoff

MAX_BATCH = 20
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"


def ca_certs(path):
    """The DER certificates in a CA file, PEM (one or more certificates) or DER. MicroPython
    up to 1.28 builds mbedTLS without PEM parsing, so load_verify_locations takes DER only:
    PEM is decoded here. ValueError when the file holds no certificate."""
    with open(path, "rb") as f:
        data = f.read()
    if PEM_BEGIN not in data:
        if not data.startswith(b"\x30"):  # a DER certificate is an ASN.1 SEQUENCE
            raise ValueError("neither a PEM nor a DER certificate")
        return [data]
    out = []
    for block in data.split(PEM_BEGIN)[1:]:
        end = block.find(PEM_END)
        if end < 0:
            raise ValueError("a PEM certificate has no END line")
        der = a2b_base64(b"".join(block[:end].split()))
        if not der.startswith(b"\x30"):
            raise ValueError("a PEM certificate does not decode to DER")
        out.append(der)
    return out


def tls_context(cfg, ssl=None):
    """An SSLContext that verifies the broker against the CA in mqtt_ca_file. The broker's
    name (mqtt_host) is checked too: it is passed as server_hostname when wrapping."""
    if ssl is None:
        import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # MicroPython's SSLContext starts at CERT_NONE (CPython's at CERT_REQUIRED).
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in ca_certs(cfg["mqtt_ca_file"]):
        ctx.load_verify_locations(cadata=der)
    return ctx


class UsslShim:
    """The `ussl` that umqtt.simple < 1.4 imports, for MicroPython 1.23+, which has none. That
    umqtt takes `ssl` as a flag and its connect() does `ussl.wrap_socket(sock, **ssl_params)`.
    This wraps only with the verifying SSLContext the transport puts in ssl_params, and refuses
    anything else: no TLS without a verified certificate through it."""

    def wrap_socket(self, sock, context=None, server_hostname=None, **kw):
        import ssl
        if kw or not server_hostname or getattr(context, "verify_mode", None) != ssl.CERT_REQUIRED:
            raise ValueError("ussl shim: wraps only with a verifying SSLContext and a server name")
        return context.wrap_socket(sock, server_hostname=server_hostname)


def legacy_ssl_params(cfg, ctx):
    """ssl_params for umqtt.simple < 1.4. Registers UsslShim as `ussl` if there is no ussl.
    Before MicroPython 1.23 ussl is MicroPython's own: it gets the parameters that make it
    verify the certificate and the name (with the first CA of a bundle only)."""
    try:
        import ussl
    except ImportError:
        import sys
        ussl = sys.modules["ussl"] = UsslShim()
    if isinstance(ussl, UsslShim):
        return {"context": ctx, "server_hostname": cfg["mqtt_host"]}
    return {"cert_reqs": 2,  # CERT_REQUIRED
            "cadata": ca_certs(cfg["mqtt_ca_file"])[0], "server_hostname": cfg["mqtt_host"]}


class Result:
    def __init__(self, status, done=0, retry_after=0, rejected=None, detail=""):
        self.status = status
        self.done = done
        self.retry_after = retry_after
        self.rejected = rejected or []
        self.detail = detail


def to_output(d):
    """HTTP oscillator state -> the MQTT output message shape."""
    return {"pwm_duty": d.get("output_pwm", d.get("pwm_duty")),
            "circadian_time": d.get("circadian_time"), "phase": d.get("phase"),
            "period_hours": d.get("period_hours"), "koa_metric": d.get("koa_metric"),
            "timestamp": d.get("timestamp"), "seq": d.get("seq")}


class MqttTransport:
    def __init__(self, cfg, client_factory=None, log=print, tls_factory=tls_context):
        self.node_id = cfg["node_id"]
        self.cfg = cfg
        if client_factory is None:
            from umqtt.simple import MQTTClient as client_factory
        self._factory = client_factory
        self.tls = bool(cfg.get("mqtt_tls"))
        self._tls_factory = tls_factory
        self._ctx = None
        self._legacy = None  # ssl_params for umqtt.simple < 1.4, made on first use
        self.client = None
        self.connected = False
        self.auth_failed = False
        self.backoff = Backoff(2, 300)
        self.inbox = []
        self._log = log
        self.t_sensors = "kaiabc/sensors/" + self.node_id
        self.t_status = "kaiabc/nodes/%s/status" % self.node_id
        self.t_output = "kaiabc/nodes/%s/output" % self.node_id

    def _on_msg(self, topic, msg):
        if isinstance(topic, bytes):
            topic = topic.decode()
        if topic == self.t_output:
            try:
                self.inbox.append(json.loads(msg))
            except ValueError:
                self._log("mqtt: bad output JSON ignored")

    def _drop(self):
        try:
            if self.client and self.client.sock:
                self.client.sock.close()
        except Exception:
            pass
        self.connected = False

    def ensure(self, now):
        if self.connected:
            return True
        if not self.backoff.ready(now):
            return False
        if self.tls:
            try:
                if self._ctx is None:
                    self._ctx = self._tls_factory(self.cfg)
            except Exception as e:
                return self._tls_failed(e, now)
        c = self._factory(self.node_id, self.cfg["mqtt_host"],
                          port=self.cfg.get("mqtt_port", 8883 if self.tls else 1883),
                          user=self.node_id, password=self.cfg["api_key"], keepalive=120)
        if self.tls:
            try:
                self._use_tls(c)
            except Exception as e:
                return self._tls_failed(e, now)
        c.set_callback(self._on_msg)
        c.set_last_will(self.t_status, "offline", retain=True, qos=1)
        self.client = c
        try:
            c.connect()
            c.publish(self.t_status, "online", retain=True, qos=1)
            c.subscribe(self.t_output, qos=1)
        except Exception as e:
            code = e.args[0] if e.args else None
            if type(e).__name__ == "MQTTException" and code in (4, 5):
                self.auth_failed = True
                self._log("mqtt: auth failed (CONNACK %s) for %s; check api_key" % (code, self.node_id))
            else:
                self._log("mqtt: connect%s failed: %r" % (" (TLS)" if self.tls else "", e))
            self._drop()
            wait = self.backoff.fail(now, 60 if self.auth_failed else 0)
            self._log("mqtt: retry in %d s" % wait)
            return False
        self.auth_failed = False
        self.connected = True
        self.backoff.ok()
        return True

    def _tls_failed(self, e, now):
        # No verifying context, no connection: never fall back to plain MQTT.
        self._log("mqtt: TLS setup failed (%r); not connecting" % (e,))
        self._log("mqtt: retry in %d s" % self.backoff.fail(now, 60))
        return False

    def _use_tls(self, c):
        """Hand our verifying context to client c. umqtt.simple's constructor only stores `ssl`
        (1.3.4 to 1.8.0), and its default tells the two APIs apart. >= 1.4: None, and `ssl` is the
        SSLContext that connect() wraps with, server_hostname = mqtt_host. 1.3.x: False, and `ssl`
        is a flag for `import ussl; ussl.wrap_socket(sock, **ssl_params)` (legacy_ssl_params)."""
        legacy = getattr(c, "ssl", None) is False
        c.ssl = self._ctx
        if legacy:
            if self._legacy is None:
                self._legacy = legacy_ssl_params(self.cfg, self._ctx)
            c.ssl_params = self._legacy

    def send(self, batch, now):
        if not self.ensure(now):
            return Result("auth" if self.auth_failed else "error", detail="not connected")
        batch = batch[:MAX_BATCH]
        payload = batch[0] if len(batch) == 1 else "[" + ",".join(batch) + "]"
        try:
            self.client.publish(self.t_sensors, payload, qos=1)  # returns after PUBACK
        except Exception as e:
            self._log("mqtt: publish failed: %r" % (e,))
            self._drop()
            self.backoff.fail(now)
            return Result("error", detail=repr(e))
        return Result("ok", done=len(batch))

    def poll(self, now):
        if self.connected:
            try:
                for _ in range(5):
                    if self.client.check_msg() is None and not self.inbox:
                        break
            except Exception as e:
                self._log("mqtt: link lost: %r" % (e,))
                self._drop()
                self.backoff.fail(now)
        out, self.inbox = self.inbox, []
        return out


class HttpTransport:
    def __init__(self, cfg, requests=None, log=print):
        if requests is None:
            import urequests as requests
        self.requests = requests
        self.cfg = cfg
        self.base = cfg["server_url"].rstrip("/")
        self.connected = False
        self.auth_failed = False
        self._log = log

    def _headers(self, json_body=False):
        h = {"X-API-Key": self.cfg["api_key"]}
        if json_body:
            h["Content-Type"] = "application/json"
        return h

    def send(self, batch, now):
        batch = batch[:MAX_BATCH]
        body = "[" + ",".join(batch) + "]"
        try:
            r = self.requests.post(self.base + "/v1/sensors/batch", data=body,
                                   headers=self._headers(True))
        except Exception as e:
            self.connected = False
            self._log("http: network error: %r" % (e,))
            return Result("error", detail=repr(e))
        try:
            code = r.status_code
            self.connected = True
            if code in (200, 201, 202):
                self.auth_failed = False
                rejected = []
                try:
                    d = r.json()
                    # The list is `rejections` (`rejected` is their count); older servers
                    # sent the list as `rejected`.
                    rejected = d.get("rejections") or []
                    if not rejected and isinstance(d.get("rejected"), list):
                        rejected = d["rejected"]
                except Exception:
                    pass
                for rj in rejected:
                    self._log("http: server rejected reading %s: %s %s" % (
                        rj.get("index"), rj.get("code"), rj.get("message")))
                return Result("ok", done=len(batch), rejected=rejected)
            if code in (401, 403):
                self.auth_failed = True
                self._log("http: auth failed (%d); readings kept, check api_key" % code)
                return Result("auth", detail=str(code))
            if code == 429:
                ra = 30
                for k in r.headers if hasattr(r, "headers") else ():
                    if k.lower() == "retry-after":
                        try:
                            ra = int(r.headers[k])
                        except ValueError:
                            pass
                return Result("rate", retry_after=ra)
            self._log("http: server answered %d; will retry" % code)
            return Result("error", detail=str(code))
        finally:
            r.close()

    def poll(self, now):
        try:
            r = self.requests.get(self.base + "/v1/oscillator/state?node_id=" + self.cfg["node_id"],
                                  headers=self._headers())
        except Exception as e:
            self.connected = False
            return []
        try:
            if r.status_code == 200:
                self.connected = True
                return [to_output(r.json())]
            return []
        except ValueError:
            return []
        finally:
            r.close()
