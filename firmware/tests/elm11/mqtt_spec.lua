local H = require("helper")
local socket = require("socket")
local mqtt = require("mqtt")
local mqtt_transport = require("mqtt_transport")
local cjson = require("cjson")

local PORT = tonumber(os.getenv("MQTT_PORT") or "")
local LUA = _VERSION == "Lua 5.1" and "lua5.1" or "lua5.3"
local uniq = tostring(os.time()) .. tostring(math.random(1, 1e6))

local function client(id, extra)
  local o = { host = "127.0.0.1", port = PORT, client_id = id .. uniq, keepalive = 30, timeout = 3 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return mqtt.new(o)
end

describe("MQTT remaining-length varint", function()
  local cases = { [0] = "\0", [127] = "\127", [128] = "\128\1", [16383] = "\255\127",
    [16384] = "\128\128\1", [2097151] = "\255\255\127", [268435455] = "\255\255\255\127" }
  for n, enc in pairs(cases) do
    it("encodes and decodes " .. n, function()
      assert.are.equal(enc, mqtt.encode_varint(n))
      local v, nxt = mqtt.decode_varint("x" .. enc, 2)
      assert.are.equal(n, v); assert.are.equal(#enc + 2, nxt)
    end)
  end
  it("reports an incomplete varint as nil", function()
    assert.is_nil(mqtt.decode_varint("x\128", 2))
  end)
end)

describe("MQTT client against a real Mosquitto", function()
  assert(PORT, "MQTT_PORT not set: run via firmware/tests/elm11/run.sh (it starts Mosquitto)")

  it("QoS 1 publish gets PUBACK and a second client receives the payload", function()
    local sub, pub = client("sub"), client("pub")
    assert(sub:connect()); assert(pub:connect())
    local topic = "test/" .. uniq .. "/q1"
    assert.are.equal(1, sub:subscribe(topic, 1))
    assert.is_true(pub:publish(topic, "hello-qos1", 1, false))
    local m = assert(sub:poll(3))
    assert.are.equal(topic, m.topic); assert.are.equal("hello-qos1", m.payload); assert.are.equal(1, m.qos)
    assert.is_true(pub:publish(topic, "hello-qos0", 0, false))
    assert.are.equal("hello-qos0", assert(sub:poll(3)).payload)
    local none, err = sub:poll(0)                -- non-blocking poll with nothing pending
    assert.is_nil(none); assert.are.equal("timeout", err)
    assert.is_true(sub:ping(3))
    sub:disconnect(); pub:disconnect()
  end)

  it("mosquitto_sub receives a QoS 1 publish", function()
    local topic = "test/" .. uniq .. "/ext"
    local out = os.tmpname()
    os.execute(("mosquitto_sub -h 127.0.0.1 -p %d -t '%s' -C 1 -W 5 > %s 2>&1 &"):format(PORT, topic, out))
    socket.sleep(0.5)
    local pub = client("pub2"); assert(pub:connect())
    assert.is_true(pub:publish(topic, "to-mosquitto_sub", 1, false))
    pub:disconnect()
    local got
    for _ = 1, 50 do
      local f = io.open(out); got = f:read("*a"); f:close()
      if got:find("to-mosquitto_sub", 1, true) then break end
      socket.sleep(0.1)
    end
    os.remove(out)
    assert.matches("to-mosquitto_sub", got, 1, true)
  end)

  it("a retained message is delivered on subscribe with the retain flag", function()
    local topic = "test/" .. uniq .. "/ret"
    local pub = client("pub3"); assert(pub:connect())
    assert.is_true(pub:publish(topic, '{"pwm_duty":99}', 1, true))
    pub:disconnect()
    local sub = client("sub3"); assert(sub:connect())
    assert(sub:subscribe(topic, 1))
    local m = assert(sub:poll(3))
    assert.is_true(m.retain); assert.are.equal('{"pwm_duty":99}', m.payload)
    sub:disconnect()
  end)

  it("the Last Will is published when the socket drops without DISCONNECT", function()
    local topic = "test/" .. uniq .. "/will"
    local watcher = client("watch"); assert(watcher:connect()); assert(watcher:subscribe(topic, 1))
    local victim = client("victim", { will = { topic = topic, payload = "offline", qos = 1, retain = true } })
    assert(victim:connect())
    assert.is_nil((watcher:poll(0.3)))           -- nothing yet
    victim.sock:close()                          -- abrupt drop
    local m = assert(watcher:poll(5))
    assert.are.equal(topic, m.topic); assert.are.equal("offline", m.payload)
    watcher:disconnect()
    -- and it was retained
    local late = client("late"); assert(late:connect()); assert(late:subscribe(topic, 0))
    local r = assert(late:poll(3)); assert.is_true(r.retain); assert.are.equal("offline", r.payload)
    late:disconnect()
  end)

  for _, size in ipairs({ 200, 20000, 300000 }) do
    it("a " .. size .. "-byte payload round-trips (multi-byte remaining length)", function()
      local topic = "test/" .. uniq .. "/big" .. size
      local parts = {}
      for i = 1, size do parts[i] = string.char(32 + (i * 7) % 90) end
      local payload = table.concat(parts)
      local a, b = client("a" .. size), client("b" .. size)
      assert(a:connect()); assert(b:connect()); assert(b:subscribe(topic, 1))
      assert.is_true(a:publish(topic, payload, 1, false))
      local m = assert(b:poll(5))
      assert.are.equal(#payload, #m.payload); assert.is_true(m.payload == payload)
      a:disconnect(); b:disconnect()
    end)
  end

  it("connection refused (nothing listening) is an error value, not a crash", function()
    local s = socket.bind("127.0.0.1", 0); local _, p = s:getsockname(); s:close()
    local c = mqtt.new({ host = "127.0.0.1", port = p, client_id = "x", timeout = 1 })
    local ok, err = c:connect()
    assert.is_nil(ok); assert.matches("refused", err)
  end)

  it("CONNACK code 5 (not authorised) is returned as an error value", function()
    local dir = H.tmpdir()
    local script = dir .. "/broker.lua"
    local f = io.open(script, "w")
    f:write([[
local socket = require("socket")
local s = assert(socket.bind("127.0.0.1", 0)); local _, p = s:getsockname()
local f = io.open(arg[1] .. "/port.tmp", "w"); f:write(p); f:close(); os.rename(arg[1] .. "/port.tmp", arg[1] .. "/port")
s:settimeout(10); local c = s:accept(); c:settimeout(5)
local h = c:receive(2); local len = h:byte(2) % 128
if h:byte(2) >= 128 then len = len + c:receive(1):byte() * 128 end
local body = c:receive(len)
local f2 = io.open(arg[1] .. "/connect.bin", "wb"); f2:write(h .. body); f2:close()
c:send(string.char(0x20, 2, 0, 5)); socket.sleep(0.5); c:close()
]]); f:close()
    os.execute(("%s %s %s >/dev/null 2>&1 &"):format(LUA, script, dir))
    local port
    for _ = 1, 100 do
      local pf = io.open(dir .. "/port"); if pf then port = tonumber(pf:read("*a")); pf:close(); break end
      socket.sleep(0.02)
    end
    local t = mqtt_transport.new({ host = "127.0.0.1", port = port, node_id = "elm11_001", api_key = "badkey", timeout = 2 })
    local res = t:upload({ '{"seq":1}' })
    assert.are.equal("auth", res.kind)
    -- the CONNECT the node sent: client id = username = node_id, password = api_key,
    -- will retained QoS 1 "offline" on kaiabc/nodes/elm11_001/status, clean session
    local cf = io.open(dir .. "/connect.bin", "rb"); local pkt = cf:read("*a"); cf:close()
    os.execute("rm -rf '" .. dir .. "'")
    assert.are.equal(0x10, pkt:byte(1))
    assert.matches("MQTT\4", pkt, 1, true)
    local flags = pkt:byte(10)
    assert.are.equal(128 + 64 + 32 + 8 + 4 + 2, flags)
    assert.is_truthy(pkt:find("\0\9elm11_001\0\29kaiabc/nodes/elm11_001/status\0\7offline\0\9elm11_001\0\6badkey", 1, true))
  end)

  it("node transport: online retained status, QoS 1 readings, output subscription", function()
    local id = "node" .. uniq
    local spy = client("spy"); assert(spy:connect())
    assert(spy:subscribe("kaiabc/sensors/" .. id, 1))
    local outputs = {}
    local t = mqtt_transport.new({ host = "127.0.0.1", port = PORT, node_id = id, api_key = "k",
      on_output = function(d) outputs[#outputs + 1] = d end })
    local res = t:upload({ '{"seq":1}', '{"seq":2}' })
    assert.are.equal("accepted", res.kind); assert.are.equal(2, res.removed)
    assert.are.equal('{"seq":1}', assert(spy:poll(3)).payload)
    assert.are.equal('{"seq":2}', assert(spy:poll(3)).payload)
    assert(spy:subscribe("kaiabc/nodes/" .. id .. "/status", 1))
    local st = assert(spy:poll(3)); assert.are.equal("online", st.payload); assert.is_true(st.retain)
    assert(spy:publish("kaiabc/nodes/" .. id .. "/output", cjson.encode({ pwm_duty = 42, circadian_time = 3 }), 1, true))
    for _ = 1, 30 do t:poll(0.1); if #outputs > 0 then break end end
    assert.are.equal(42, outputs[1].pwm_duty)
    -- clean up retained state
    spy:publish("kaiabc/nodes/" .. id .. "/output", "", 1, true)
    spy:publish("kaiabc/nodes/" .. id .. "/status", "", 1, true)
    t.client:disconnect(); spy:disconnect()
  end)
end)
