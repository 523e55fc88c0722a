import json
from transport import MqttTransport, HttpTransport
from fakenet import Broker, FakeClient, FakeRequests, Resp

CFG = {"node_id": "pico_001", "api_key": "k123", "server_url": "http://10.0.0.2:8000/",
       "mqtt_host": "10.0.0.2", "mqtt_port": 1883}
LOG = []


def mqtt(broker):
    return MqttTransport(CFG, client_factory=lambda *a, **k: FakeClient(broker, *a, **k), log=LOG.append)


def test_mqtt_connect_identity_lwt_online_subscribe():
    b = Broker()
    t = mqtt(b)
    assert t.ensure(0)
    assert b.connects == [("pico_001", "pico_001", "k123")]
    assert b.lwt == ("kaiabc/nodes/pico_001/status", "offline", True, 1)
    assert b.published[0] == ("kaiabc/nodes/pico_001/status", "online", True, 1)
    assert b.subs == [("kaiabc/nodes/pico_001/output", 1)]


def test_mqtt_single_and_batch_payloads_qos1():
    b = Broker()
    t = mqtt(b)
    r = t.send(['{"seq": 1}'], 0)
    assert r.status == "ok" and r.done == 1
    r = t.send(['{"seq": %d}' % i for i in range(2, 30)], 0)
    assert r.done == 20  # capped batch
    topic, payload, retain, qos = b.published[-1]
    assert topic == "kaiabc/sensors/pico_001" and qos == 1 and not retain
    assert [d["seq"] for d in json.loads(payload)] == list(range(2, 22))
    assert json.loads(b.published[1][1]) == {"seq": 1}


def test_mqtt_connack5_is_auth_failure_with_backoff():
    b = Broker()
    b.connack = 5
    t = mqtt(b)
    r = t.send(['{"seq": 1}'], 100)
    assert r.status == "auth" and r.done == 0 and t.auth_failed
    assert any("auth failed" in m for m in LOG)
    n = len(b.connects)
    assert t.send(['{"seq": 1}'], 101).status == "auth"  # backing off, no reconnect storm
    assert len(b.connects) == n
    b.connack = 0
    assert t.send(['{"seq": 1}'], 100 + 61).status == "ok"


def test_mqtt_output_messages_delivered():
    b = Broker()
    t = mqtt(b)
    t.ensure(0)
    b.pending.append(("kaiabc/nodes/pico_001/output", json.dumps({"pwm_duty": 9, "circadian_time": 1.0})))
    b.pending.append(("kaiabc/nodes/other/output", "{}"))
    msgs = t.poll(0)
    assert msgs == [{"pwm_duty": 9, "circadian_time": 1.0}]


def test_http_post_headers_body_and_202_with_rejections():
    rq = FakeRequests()
    rq.script.append(Resp(200, {"accepted": 1, "rejected": 1,
                                "rejections": [{"index": 1, "code": "OUT_OF_RANGE", "message": "x"}]}))
    t = HttpTransport(CFG, requests=rq, log=LOG.append)
    r = t.send(['{"seq": 1}', '{"seq": 2}'], 0)
    url, data, h = rq.posts[0]
    assert url == "http://10.0.0.2:8000/v1/sensors/batch"
    assert h == {"X-API-Key": "k123", "Content-Type": "application/json"}
    assert json.loads(data) == [{"seq": 1}, {"seq": 2}]
    assert r.status == "ok" and r.done == 2 and len(r.rejected) == 1


def test_http_error_statuses():
    rq = FakeRequests()
    rq.script = [Resp(401), Resp(403), Resp(429, headers={"Retry-After": "17"}), Resp(503), OSError(104)]
    t = HttpTransport(CFG, requests=rq, log=LOG.append)
    assert t.send(["{}"], 0).status == "auth"
    assert t.send(["{}"], 0).status == "auth"
    r = t.send(["{}"], 0)
    assert r.status == "rate" and r.retry_after == 17
    assert t.send(["{}"], 0).status == "error"
    assert t.send(["{}"], 0).status == "error"


def test_http_poll_maps_state_to_output():
    rq = FakeRequests()
    rq.state = {"output_pwm": 128, "circadian_time": 13.5, "period_hours": 24.2, "phase": 0.56,
                "koa_metric": 0.9, "timestamp": "2026-11-27T13:05:00Z"}
    t = HttpTransport(CFG, requests=rq)
    m = t.poll(0)[0]
    assert rq.gets[0] == ("http://10.0.0.2:8000/v1/oscillator/state?node_id=pico_001", {"X-API-Key": "k123"})
    assert m["pwm_duty"] == 128 and m["circadian_time"] == 13.5 and m["period_hours"] == 24.2
