-- Build the reading JSON the server's POST /v1/sensors/batch and MQTT ingest expect.
local cjson = require("cjson")
local util = require("util")
local M = {}

M.T_MIN_K, M.T_MAX_K = 273.15, 323.15

-- Reported with every reading: the server's node list shows what each node runs.
M.FIRMWARE_VERSION = "1.3.0"

function M.iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

-- m: result of bme280 Dev:read() or nil (read failed). Returns a Lua table.
-- A failed read still produces a reading (quality "invalid", no measured values):
-- the server rejects it (MISSING_FIELD) and the node drops it, so it is counted, not retried.
function M.build(node_id, seq, t, m)
  local r = {
    node_id = node_id,
    seq = seq,
    timestamp = M.iso8601(t),
    sensor_type = "BME280",
    quality = "invalid",
    firmware_version = M.FIRMWARE_VERSION,
  }
  if m then
    local k = m.temperature_c + 273.15
    r.temperature_kelvin = util.round(k, 2)
    r.humidity_percent = util.round(m.humidity_percent, 2)
    r.pressure_pa = util.round(m.pressure_pa, 2)
    r.raw_values = {
      temperature = util.round(m.temperature_c, 2),
      humidity = util.round(m.humidity_percent, 2),
      pressure = util.round(m.pressure_pa / 100, 4),
    }
    if k >= M.T_MIN_K and k <= M.T_MAX_K then r.quality = "good" end
  end
  return r
end

function M.encode(r) return cjson.encode(r) end

return M
