-- Node transport over MQTT: readings QoS 1 to kaiabc/sensors/{id}, output on
-- kaiabc/nodes/{id}/output (retained), status "online"/"offline" (will) retained.
-- o.tls = { cafile = PEM path } connects over TLS (mqtt.lua, mqtt_tls.lua).
local cjson = require("cjson")
local mqtt = require("mqtt")
local M = {}
M.__index = M

function M.new(o)
  local self = setmetatable({ node_id = o.node_id, on_output = o.on_output }, M)
  local status = "kaiabc/nodes/" .. o.node_id .. "/status"
  self.status_topic = status
  self.data_topic = "kaiabc/sensors/" .. o.node_id
  self.output_topic = "kaiabc/nodes/" .. o.node_id .. "/output"
  self.client = (o.mqtt or mqtt).new({ host = o.host, port = o.port, client_id = o.node_id,
    username = o.node_id, password = o.api_key, keepalive = o.keepalive or 60, timeout = o.timeout or 5,
    tls = o.tls, will = { topic = status, payload = "offline", qos = 1, retain = true } })
  return self
end

function M:ensure()
  if self.client:connected() then return true end
  local ok, err, rc = self.client:connect()
  if not ok then return nil, err, rc end
  self.client:publish(self.status_topic, "online", 1, true)
  local g, serr = self.client:subscribe(self.output_topic, 1)
  if not g then
    -- No SUBACK: start over on the next upload (a refusal keeps the link for the readings).
    if serr ~= "subscription refused" then self.client:_lost(serr) end
    return nil, serr
  end
  return true
end

function M:upload(entries)
  local ok, err, rc = self:ensure()
  if not ok then
    if rc == 4 or rc == 5 then return { kind = "auth", status = "CONNACK " .. rc } end
    return { kind = "retry", err = err }
  end
  for i, e in ipairs(entries) do
    local p, perr = self.client:publish(self.data_topic, e, 1, false)
    if not p then
      self.client:_lost(perr)
      if i == 1 then return { kind = "retry", err = perr } end
      return { kind = "accepted", removed = i - 1, accepted = i - 1, rejected = {} }
    end
  end
  return { kind = "accepted", removed = #entries, accepted = #entries, rejected = {} }
end

-- Deliver received output messages to self.on_output(tbl); non-blocking by default.
function M:poll(timeout)
  if not self.client:connected() then return end
  self.client:keepalive_tick()
  while true do
    local m = self.client:poll(timeout or 0)
    if not m then return end
    timeout = 0
    if m.topic == self.output_topic and self.on_output then
      local ok, d = pcall(cjson.decode, m.payload)
      if ok and type(d) == "table" then self.on_output(d) end
    end
  end
end

return M
