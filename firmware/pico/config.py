# Loads, checks and saves the node's config.json (defaults filled in, one clear error per
# mistake, saved atomically so a power cut never leaves half a file).
import json
import os


class ConfigError(Exception):
    pass


DEFAULTS = {
    "transport": "mqtt",
    "mqtt_tls": False,
    "sample_interval_s": 60,
    "ntp_host": "pool.ntp.org",
    "ntp_resync_s": 6 * 3600,
    "watchdog_ms": 8000,
    "buffer_capacity": 1440,
    "buffer_path": "buffer.bin",
    "seq_path": "seq.txt",
    "output_stale_s": 180,
}
I2C_DEFAULTS = {"id": 0, "sda": 4, "scl": 5, "freq": 400000}
BME_DEFAULTS = {"address": 0x76, "mode": "forced", "osrs_t": 1, "osrs_p": 1, "osrs_h": 1,
                "filter": 0, "standby_ms": 1000}
PWM_DEFAULTS = {"pin": 15, "freq": 1000}


def _merged(defaults, given):
    out = dict(defaults)
    out.update(given or {})
    return out


def _num(cfg, key, lo, hi):
    v = cfg.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError("%s must be a number from %s to %s, got %r" % (key, lo, hi, v))


def _text(cfg, key):
    v = cfg.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError("%s must be a non-empty string" % key)


def check(raw):
    """The config with defaults filled in; ConfigError names the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    cfg = _merged(DEFAULTS, raw)
    _text(cfg, "node_id")
    nid = cfg["node_id"]
    if len(nid) > 64 or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
                            for c in nid):
        raise ConfigError("node_id must be 1-64 characters of A-Z a-z 0-9 _ -, got %r" % nid)
    if not cfg.get("api_key") and not cfg.get("provisioning_token"):
        raise ConfigError("api_key is missing (or give provisioning_token to register at first boot)")
    if cfg["transport"] not in ("mqtt", "http"):
        raise ConfigError("transport must be 'mqtt' or 'http', got %r" % (cfg["transport"],))
    if not isinstance(cfg["mqtt_tls"], bool):
        raise ConfigError("mqtt_tls must be true or false, got %r" % (cfg["mqtt_tls"],))
    if "mqtt_port" not in cfg:
        cfg["mqtt_port"] = 8883 if cfg["mqtt_tls"] else 1883
    if cfg["transport"] == "mqtt":
        _text(cfg, "mqtt_host")
        _num(cfg, "mqtt_port", 1, 65535)
        if cfg["mqtt_tls"]:
            _text(cfg, "mqtt_ca_file")
            from transport import ca_certs
            try:
                ca_certs(cfg["mqtt_ca_file"])
            except (OSError, ValueError) as e:
                raise ConfigError("mqtt_ca_file %s: %s" % (cfg["mqtt_ca_file"], e))
    if cfg["transport"] == "http" or cfg.get("provisioning_token"):
        _text(cfg, "server_url")
        if not cfg["server_url"].startswith(("http://", "https://")):
            raise ConfigError("server_url must start with http:// or https://")
    _num(cfg, "sample_interval_s", 1, 86400)
    _num(cfg, "watchdog_ms", 1000, 8388)  # the RP2040's watchdog cannot wait longer
    _num(cfg, "buffer_capacity", 1, 100000)
    _num(cfg, "output_stale_s", 1, 86400)
    _num(cfg, "ntp_resync_s", 60, 7 * 86400)
    wifi = cfg.get("wifi")
    if wifi is not None and (not isinstance(wifi, dict) or not wifi.get("ssid")):
        raise ConfigError("wifi must be {\"ssid\": ..., \"password\": ...}")
    cfg["i2c"] = _merged(I2C_DEFAULTS, cfg.get("i2c"))
    cfg["bme280"] = _merged(BME_DEFAULTS, cfg.get("bme280"))
    cfg["pwm"] = _merged(PWM_DEFAULTS, cfg.get("pwm"))
    return cfg


def load(path):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e))
    except ValueError as e:
        raise ConfigError("%s is not valid JSON: %s" % (path, e))
    return check(raw)


def save(path, raw):
    """Writes `raw` (the file's own keys, not the defaults) atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(raw, f)
    os.rename(tmp, path)
