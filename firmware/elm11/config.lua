-- Load and validate config.json. Errors name the offending field.
local cjson = require("cjson")
local util = require("util")
local M = {}

local function fail(msg) error("config: " .. msg, 0) end

local function num(t, k, lo, hi, prefix)
  local v = t[k]
  local name = (prefix or "") .. k
  if type(v) ~= "number" then fail(name .. " must be a number") end
  if (lo and v < lo) or (hi and v > hi) then
    fail(string.format("%s = %s is out of range [%s, %s]", name, tostring(v), tostring(lo), tostring(hi)))
  end
  return v
end
-- A whole number, stored back as an integer: lua-cjson decodes every number as a float, and
-- on Lua 5.3 a float port (37913.0) makes LuaSocket's connect fail ("service not supported").
local function int(t, k, lo, hi, prefix)
  local v = num(t, k, lo, hi, prefix)
  if v % 1 ~= 0 then fail((prefix or "") .. k .. " must be a whole number") end
  t[k] = math.tointeger and math.tointeger(v) or v
  return t[k]
end
local function str(t, k)
  local v = t[k]
  if type(v) ~= "string" or v == "" then fail(k .. " must be a non-empty string") end
  return v
end

-- MQTT over TLS: LuaSec present, and a readable PEM CA file (OpenSSL's CA loading, which
-- LuaSec uses, reads PEM only).
function M.check_tls(c)
  local path = str(c, "mqtt_ca_file")
  local ok, err = require("mqtt_tls").luasec()
  if not ok then fail(err) end
  local pem = util.read_file(path)
  if not pem then fail("mqtt_ca_file: cannot read " .. path) end
  if not pem:find("-----BEGIN CERTIFICATE-----", 1, true) then
    fail("mqtt_ca_file " .. path .. " is not a PEM certificate (DER? convert it with "
      .. "openssl x509 -inform DER -in ca.der -out ca.crt)")
  end
end

function M.validate(c)
  if type(c) ~= "table" then fail("top level must be a JSON object") end
  local id = str(c, "node_id")
  if #id > 64 or not id:match("^[A-Za-z0-9_%-]+$") then
    fail("node_id must match ^[A-Za-z0-9_-]{1,64}$ (got " .. id .. ")")
  end
  str(c, "api_key")
  if c.transport ~= "http" and c.transport ~= "mqtt" then
    fail('transport must be "http" or "mqtt" (got ' .. tostring(c.transport) .. ")")
  end
  if c.transport == "http" or c.server_url ~= nil then
    local u = str(c, "server_url")
    if not u:match("^https?://[^/]") then fail("server_url must start with http:// or https:// (got " .. u .. ")") end
    c.server_url = u:gsub("/+$", "")
  end
  if c.mqtt_tls == nil then c.mqtt_tls = false end
  if type(c.mqtt_tls) ~= "boolean" then fail("mqtt_tls must be true or false") end
  if c.transport == "mqtt" then
    str(c, "mqtt_host")
    if c.mqtt_port == nil and c.mqtt_tls then c.mqtt_port = 8883 end
    int(c, "mqtt_port", 1, 65535)
    if c.mqtt_tls then M.check_tls(c) end
  end
  num(c, "sample_interval_s", 1, 86400)
  int(c, "buffer_capacity", 1, 100000)
  str(c, "buffer_path")
  if c.seq_path == nil then c.seq_path = c.buffer_path .. ".seq" end
  local b = c.bme280
  if type(b) ~= "table" then fail("bme280 must be an object") end
  int(b, "address", 0x76, 0x77, "bme280.")
  if b.mode ~= "forced" and b.mode ~= "normal" then fail('bme280.mode must be "forced" or "normal"') end
  local bme = require("bme280")
  for _, k in ipairs({ "osrs_t", "osrs_p", "osrs_h" }) do
    if bme.OSRS[b[k]] == nil then fail("bme280." .. k .. " must be one of 0,1,2,4,8,16") end
  end
  if bme.FILTER[b.filter] == nil then fail("bme280.filter must be one of 0,2,4,8,16") end
  if bme.STANDBY[b.standby_ms] == nil then
    fail("bme280.standby_ms must be one of 0.5,10,20,62.5,125,250,500,1000")
  end
  local p = c.pwm
  if type(p) ~= "table" then fail("pwm must be an object") end
  int(p, "pin", 0, 255, "pwm.")
  num(p, "freq", 1, 1000000, "pwm.")
  return c
end

function M.load(path)
  local s = util.read_file(path)
  if not s then fail("cannot read " .. path) end
  local ok, c = pcall(cjson.decode, s)
  if not ok then fail(path .. " is not valid JSON: " .. tostring(c)) end
  return M.validate(c)
end

return M
