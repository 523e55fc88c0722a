import json
import reading
import timeutil
from seqstore import SeqStore
from helpers import tmpdir




def test_json_shape_and_key_order():
    r = reading.make_reading("pico_001", 17, "2026-11-27T13:05:00Z",
                             {"t_centi": 2508, "p_q24_8": 25838464, "h_q22_10": 42189})
    s = reading.serialize(r)
    assert s == ('{"node_id": "pico_001", "seq": 17, "timestamp": "2026-11-27T13:05:00Z", '
                 '"temperature_kelvin": 298.23, "humidity_percent": 41.2, "pressure_pa": 100931.5, '
                 '"sensor_type": "BME280", "quality": "good", "raw_values": {"temperature": 25.08, '
                 '"humidity": 41.2, "pressure": 1009.315}, "firmware_version": "1.3.0"}'), s
    d = json.loads(s)
    assert d["temperature_kelvin"] == 298.23 and d["raw_values"]["pressure"] == 1009.315


def test_rounding_from_fixed_point():
    r = reading.make_reading("n", 1, "2026-01-01T00:00:00Z",
                             {"t_centi": -5, "p_q24_8": 25767236, "h_q22_10": 0})
    d = json.loads(reading.serialize(r))
    assert d["raw_values"]["temperature"] == -0.05
    assert d["temperature_kelvin"] == 273.1
    assert d["pressure_pa"] == 100653.27  # 25767236/256 = 100653.265625 -> .27
    assert d["humidity_percent"] == 0.0
    assert d["quality"] == "invalid"  # 273.10 K < 273.15 K


def test_quality_invalid_out_of_range_but_still_sent():
    hot = reading.make_reading("n", 1, "t", {"t_centi": 5001, "p_q24_8": 100000 * 256, "h_q22_10": 40 * 1024})
    ok = reading.make_reading("n", 1, "t", {"t_centi": 5000, "p_q24_8": 100000 * 256, "h_q22_10": 40 * 1024})
    lowp = reading.make_reading("n", 1, "t", {"t_centi": 2000, "p_q24_8": 29999 * 256, "h_q22_10": 40 * 1024})
    assert hot["quality"] == "invalid" and float(hot["temperature_kelvin"]) == 323.16
    assert ok["quality"] == "good"
    assert lowp["quality"] == "invalid"


def test_failed_read_is_invalid_with_nulls():
    d = json.loads(reading.serialize(reading.make_reading("n", 3, "2026-01-01T00:00:00Z", None)))
    assert d["quality"] == "invalid" and d["temperature_kelvin"] is None and d["seq"] == 3


def test_iso8601_formatting():
    assert timeutil.iso8601(0) == "1970-01-01T00:00:00Z"
    assert timeutil.iso8601(1795784700) == "2026-11-27T13:05:00Z"
    assert timeutil.iso8601(951782400) == "2000-02-29T00:00:00Z"  # leap day
    assert timeutil.iso8601(4107542399) == "2100-02-28T23:59:59Z"  # 2100 not leap
    assert timeutil.iso8601(4107542400) == "2100-03-01T00:00:00Z"
    assert timeutil.iso8601(1795784700.9) == "2026-11-27T13:05:00Z"


def test_iso8601_parse_roundtrip():
    for t in (0, 951782400, 1795784700, 4107542400, 1709164799):
        assert timeutil.parse_iso8601(timeutil.iso8601(t)) == t
    assert timeutil.parse_iso8601("2026-11-27T14:05:00+01:00") == 1795784700
    assert timeutil.parse_iso8601("2026-11-27T13:05:00.5Z") == 1795784700.5
    assert timeutil.parse_iso8601("garbage") is None
    assert timeutil.parse_iso8601("2026-13-27T13:05:00Z") is None


def test_unix_now_is_1970_epoch():
    assert timeutil.unix_now() > timeutil.SYNCED_AFTER


def test_seq_persists_across_reboot():
    d = tmpdir("seq")
    s = SeqStore(d + "/seq")
    assert [s.next(), s.next(), s.next()] == [1, 2, 3]
    s2 = SeqStore(d + "/seq")  # reboot
    assert s2.next() == 4
    with open(d + "/seq", "w") as f:
        f.write("garbage")
    with open(d + "/seq.tmp", "w") as f:
        f.write("41")
    assert SeqStore(d + "/seq").next() == 42  # interrupted write recovered
