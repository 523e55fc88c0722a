import machine
from output import Output

T0 = 1795784700  # 2026-11-27T13:05:00Z
ISO = "2026-11-27T13:05:00Z"


def duty_for(ct):
    # a smooth-ish day curve: 0 at night, peaks 240 at ct 12
    return int(240 * max(0.0, 1 - abs(ct - 12) / 8))


def learn_full_day(o, pwm, t_start):
    # the server publishes every 30 min for one circadian day (period 24 h)
    for k in range(48):
        ct = k * 0.5 + 0.25
        now = t_start + k * 1800
        o.on_message({"pwm_duty": duty_for(ct), "circadian_time": ct, "period_hours": 24.0,
                      "seq": k, "timestamp": None}, now)
    return t_start + 47 * 1800


def test_online_applies_duty_times_257():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    assert o.on_message({"pwm_duty": 200, "circadian_time": 6.0, "period_hours": 24.0,
                         "seq": 1, "timestamp": ISO}, T0)
    assert pwm.duties == [200 * 257]
    o.on_message({"pwm_duty": 255, "circadian_time": 6.1, "seq": 2, "timestamp": ISO}, T0 + 60)
    assert pwm.duties[-1] == 65535
    assert o.tick(T0 + 120, True) == 255 and o.mode == "online"


def test_invalid_and_duplicate_messages_ignored():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    assert not o.on_message({"pwm_duty": 300, "circadian_time": 1}, T0)
    assert not o.on_message({"circadian_time": 1}, T0)
    assert o.on_message({"pwm_duty": 10, "circadian_time": 1, "seq": 5, "timestamp": ISO}, T0)
    # retained re-delivery after reconnect must not reset the trajectory anchor
    assert not o.on_message({"pwm_duty": 10, "circadian_time": 1, "seq": 5, "timestamp": ISO}, T0 + 7200)
    assert o.last[2] == T0
    assert pwm.duties == [10 * 257]


def test_offline_follows_learned_curve_not_frozen():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm, stale_s=180)
    t_last = learn_full_day(o, pwm, T0)
    last_ct = 23.75
    assert o.duty == duty_for(last_ct)
    seen = set()
    for h in range(1, 25):
        now = t_last + h * 3600
        d = o.tick(now, link_up=False)
        assert o.mode == "offline"
        ct = (last_ct + h) % 24
        # h hours later ct = 23.75+h: exactly on a bin centre -> the learned value
        assert d == duty_for(ct), (h, ct, d, duty_for(ct))
        assert pwm.duties[-1] == d * 257
        seen.add(d)
    assert len(seen) > 10  # it moves over the simulated day


def test_offline_interpolates_between_bins_circularly():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    o.on_message({"pwm_duty": 100, "circadian_time": 22.25, "period_hours": 24, "seq": 1, "timestamp": None}, T0)
    o.on_message({"pwm_duty": 200, "circadian_time": 2.25, "period_hours": 24, "seq": 2, "timestamp": None}, T0 + 1)
    # stale: ct(T0+1 + 2h) = 4.25 -> between 2.25 (200) and 22.25+24 (100): 200 - 100*2/20 = 190
    assert o.tick(T0 + 1 + 7200, link_up=True) == 190
    # midnight wrap: ct 0.25 is half way (on the circle) between 22.25 and 2.25 -> 150
    assert o.curve_at(0.25) == 150


def test_offline_period_scaling():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    o.on_message({"pwm_duty": 50, "circadian_time": 6.0, "period_hours": 25.0, "seq": 1, "timestamp": ISO}, T0)
    # 25 real hours at period 25 h = exactly one circadian day
    assert abs(o.circadian_time_at(T0 + 25 * 3600) - 6.0) < 1e-6
    assert abs(o.circadian_time_at(T0 + 12.5 * 3600) - 18.0) < 1e-6


def test_anchor_uses_message_timestamp():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    # a retained output published 3 h before we booted
    o.on_message({"pwm_duty": 50, "circadian_time": 6.0, "period_hours": 24.0, "seq": 9,
                  "timestamp": "2026-11-27T10:05:00Z"}, T0)
    assert abs(o.circadian_time_at(T0) - 9.0) < 1e-6


def test_empty_curve_holds_last_duty():
    pwm = machine.PWM(machine.Pin(15))
    o = Output(pwm)
    assert o.tick(T0, False) is None and pwm.duties == []
    o.on_message({"pwm_duty": 77, "circadian_time": 3.0, "seq": 1, "timestamp": None}, T0)
    o.curve = [None] * 48
    assert o.tick(T0 + 99999, False) == 77
