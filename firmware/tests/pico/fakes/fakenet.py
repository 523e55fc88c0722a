# Fake MQTT client (umqtt.simple interface) and fake urequests module.
import json
from umqtt.simple import MQTTException


class Broker:
    """Shared state: what the 'server' received and how it misbehaves."""

    def __init__(self):
        self.published = []  # (topic, payload, retain, qos)
        self.retained = {}
        self.connects = []
        self.down = 0  # next N connect/publish calls fail with OSError
        self.connack = 0  # CONNACK return code to answer
        self.lwt = None
        self.subs = []
        self.pending = []  # (topic, msg) to deliver via check_msg
        self.clients = []  # every FakeClient made, in order

    def readings(self):
        out = []
        for t, p, _, _ in self.published:
            if t.startswith("kaiabc/sensors/"):
                d = json.loads(p)
                out.extend(d if isinstance(d, list) else [d])
        return out


class FakeClient:
    def __init__(self, broker, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None):
        self.b = broker
        self.client_id, self.server, self.port = client_id, server, port
        self.ssl = ssl  # umqtt.simple >= 1.4: an SSLContext (MQTT over TLS), default None
        broker.clients.append(self)
        self.user, self.pswd = user, password
        self.cb = None
        self.sock = None
        self.lw = None

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw = (topic, msg, retain, qos)

    def _net(self):
        if self.b.down > 0:
            self.b.down -= 1
            raise OSError(113)  # EHOSTUNREACH

    def _wrap(self, sock):
        # umqtt.simple >= 1.4: the context wraps the socket, with the broker's name
        return self.ssl.wrap_socket(sock, server_hostname=self.server)

    def connect(self, clean_session=True):
        self._net()
        sock = self._wrap(self) if self.ssl else self
        self.b.connects.append((self.client_id, self.user, self.pswd))
        if self.b.connack:
            raise MQTTException(self.b.connack)
        self.b.lwt = self.lw
        self.sock = sock
        return 0

    def close(self):
        self.sock = None

    def publish(self, topic, msg, retain=False, qos=0):
        self._net()
        self.b.published.append((topic, msg, retain, qos))
        if retain:
            self.b.retained[topic] = msg

    def subscribe(self, topic, qos=0):
        assert self.cb is not None
        self.b.subs.append((topic, qos))

    def check_msg(self):
        self._net()
        if self.b.pending:
            t, m = self.b.pending.pop(0)
            self.cb(t.encode(), m.encode())
            return 0x30
        return None


class LegacyFakeClient(FakeClient):
    """umqtt.simple 1.3.x's TLS API: `ssl` is a flag (default False) and connect() does
    `import ussl; ussl.wrap_socket(sock, **ssl_params)`."""

    def __init__(self, broker, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=False, ssl_params={}):
        FakeClient.__init__(self, broker, client_id, server, port, user, password, keepalive, ssl)
        self.ssl_params = ssl_params

    def _wrap(self, sock):
        import ussl
        return ussl.wrap_socket(sock, **self.ssl_params)


class FakeContext:
    """An SSLContext that records the names it wraps with and hands the socket back."""

    def __init__(self, verify_mode=2):  # CERT_REQUIRED
        self.verify_mode = verify_mode
        self.wrapped = []

    def wrap_socket(self, sock, server_hostname=None):
        self.wrapped.append(server_hostname)
        return sock


class Resp:
    def __init__(self, status, body=None, headers=None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}
        self.closed = False

    def json(self):
        return self._body

    def close(self):
        self.closed = True


class FakeRequests:
    """Scripted urequests: `script` is a list of responses (Resp or an
    exception instance) for successive POSTs; when empty, 202 accepts all."""

    def __init__(self):
        self.posts = []
        self.gets = []
        self.script = []
        self.state = None

    def post(self, url, data=None, json=None, headers=None):
        self.posts.append((url, data, headers))
        if self.script:
            r = self.script.pop(0)
            if isinstance(r, Exception):
                raise r
            return r
        n = len(__import__("json").loads(data))
        return Resp(202, {"accepted": n, "rejected": []})

    def get(self, url, headers=None):
        self.gets.append((url, headers))
        if self.state is None:
            return Resp(404, {})
        return Resp(200, self.state)

    def received(self):
        out = []
        for url, data, h in self.posts:
            out.append(__import__("json").loads(data))
        return out
