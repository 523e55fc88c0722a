-- Wiring of the ELM11 node: config + hal -> BME280 -> buffer/seq -> transport -> output -> node.
-- app.build(cfg, hal, log) -> { node =, transport =, output =, sensor = }; main.lua runs the loop.
local bme280 = require("bme280")
local node = require("node")
local output = require("output")
local M = {}

-- cfg: validated config (config.lua); hal: see hal.lua; log(msg).
function M.build(cfg, hal, log)
  local b = cfg.bme280
  local sensor = bme280.new(hal, { address = b.address, mode = b.mode, osrs_t = b.osrs_t,
    osrs_p = b.osrs_p, osrs_h = b.osrs_h, filter = b.filter, standby_ms = b.standby_ms })
  local out = output.new({ hal = hal, sample_interval_s = cfg.sample_interval_s })

  local n
  local transport
  if cfg.transport == "mqtt" then
    transport = require("mqtt_transport").new({ host = cfg.mqtt_host, port = cfg.mqtt_port,
      node_id = cfg.node_id, api_key = cfg.api_key,
      tls = cfg.mqtt_tls and { cafile = cfg.mqtt_ca_file } or nil,
      on_output = function(d) if n then n:on_output(d, hal.now()) end end })
  else
    transport = require("http_transport").new({ server_url = cfg.server_url, api_key = cfg.api_key,
      node_id = cfg.node_id })
  end

  n = node.new({ cfg = cfg, hal = hal, sensor = sensor, transport = transport, output = out, log = log,
    buffer = require("buffer").open(cfg.buffer_path, cfg.buffer_capacity),
    seq = require("seq").open(cfg.seq_path) })

  return { node = n, transport = transport, output = out, sensor = sensor }
end

return M
