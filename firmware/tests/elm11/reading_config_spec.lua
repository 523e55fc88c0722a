local H = require("helper")
local reading = require("reading")
local config = require("config")
local cjson = require("cjson")

describe("reading JSON", function()
  it("has exactly the server's fields, units and rounding", function()
    local t = 1795784700 -- 2026-11-27T13:05:00Z
    local r = reading.build("elm11_001", 17, t,
      { temperature_c = 25.0823, humidity_percent = 41.2049, pressure_pa = 100931.5012 })
    local d = cjson.decode(reading.encode(r))
    assert.are.same({
      node_id = "elm11_001", seq = 17, timestamp = "2026-11-27T13:05:00Z",
      temperature_kelvin = 298.23, humidity_percent = 41.2, pressure_pa = 100931.5,
      sensor_type = "BME280", quality = "good",
      raw_values = { temperature = 25.08, humidity = 41.2, pressure = 1009.315 },
      firmware_version = reading.FIRMWARE_VERSION,
    }, d)
    assert.matches('"seq":17[,}]', reading.encode(r))
  end)
  it("quality is invalid outside 273.15..323.15 K", function()
    assert.are.equal("invalid", reading.build("n", 1, 0, { temperature_c = -0.5, humidity_percent = 1, pressure_pa = 1e5 }).quality)
    assert.are.equal("invalid", reading.build("n", 1, 0, { temperature_c = 50.5, humidity_percent = 1, pressure_pa = 1e5 }).quality)
    assert.are.equal("good", reading.build("n", 1, 0, { temperature_c = 0.0, humidity_percent = 1, pressure_pa = 1e5 }).quality)
  end)
  it("quality is invalid and no values are invented when the read failed", function()
    local r = reading.build("n", 3, 0, nil)
    assert.are.equal("invalid", r.quality)
    assert.is_nil(r.temperature_kelvin)
    assert.are.equal("1970-01-01T00:00:00Z", r.timestamp)
  end)
end)

describe("config", function()
  local function example()
    return H.read_json(H.dir .. "/../../elm11/config.example.json")
  end
  it("accepts config.example.json and derives seq_path", function()
    local c = config.validate(example())
    assert.are.equal("elm11_001", c.node_id)
    assert.are.equal(c.buffer_path .. ".seq", c.seq_path)
  end)
  local bad = {
    { "node_id", function(c) c.node_id = "bad id!" end },
    { "transport", function(c) c.transport = "coap" end },
    { "server_url", function(c) c.server_url = "ftp://x" end },
    { "sample_interval_s", function(c) c.sample_interval_s = 0 end },
    { "bme280.osrs_t", function(c) c.bme280.osrs_t = 3 end },
    { "bme280.address", function(c) c.bme280.address = 0x40 end },
    { "bme280.standby_ms", function(c) c.bme280.standby_ms = 7 end },
    { "mqtt_port", function(c) c.transport = "mqtt"; c.mqtt_port = 70000 end },
    { "mqtt_port", function(c) c.transport = "mqtt"; c.mqtt_port = 1883.5 end },
    { "api_key", function(c) c.api_key = nil end },
  }
  for _, b in ipairs(bad) do
    it("names the bad field: " .. b[1], function()
      local c = example(); b[2](c)
      local ok, err = pcall(config.validate, c)
      assert.is_false(ok)
      assert.matches(b[1], err, 1, true)
    end)
  end
  it("load() gives ports and pins as integers (lua-cjson decodes numbers as floats)", function()
    local p = os.tmpname(); local f = io.open(p, "w")
    f:write('{"node_id":"n","api_key":"k","transport":"mqtt","mqtt_host":"h","mqtt_port":1883,'
      .. '"sample_interval_s":60,"buffer_capacity":10,"buffer_path":"/tmp/b",'
      .. '"bme280":{"address":118,"mode":"forced","osrs_t":1,"osrs_p":1,"osrs_h":1,"filter":0,'
      .. '"standby_ms":1000},"pwm":{"pin":5,"freq":1000}}')
    f:close()
    local c = config.load(p); os.remove(p)
    -- "1883.0" on Lua 5.3 before: LuaSocket could not connect to that port.
    assert.are.equal("1883", tostring(c.mqtt_port))
    assert.are.equal("5", tostring(c.pwm.pin))
  end)
  it("load() reports invalid JSON with the path", function()
    local p = os.tmpname(); local f = io.open(p, "w"); f:write("{nope"); f:close()
    local ok, err = pcall(config.load, p); os.remove(p)
    assert.is_false(ok); assert.matches("not valid JSON", err, 1, true)
  end)
end)
