-- MQTT over TLS (LuaSec) against the real Mosquitto that run.sh starts (tests/broker.sh): a TLS
-- listener with a certificate from scripts/certs.sh, one whose certificate another CA signed,
-- one with a certificate for another name, and the plain listener.
local H = require("helper")
local socket = require("socket")
local mqtt = require("mqtt")
local mqtt_tls = require("mqtt_tls")
local mqtt_transport = require("mqtt_transport")
local config = require("config")

local PORT = tonumber(os.getenv("MQTT_PORT") or "")
local TLS_PORT = tonumber(os.getenv("MQTT_TLS_PORT") or "")
local ROGUE_PORT = tonumber(os.getenv("MQTT_TLS_ROGUE_PORT") or "")
local WRONGNAME_PORT = tonumber(os.getenv("MQTT_TLS_WRONGNAME_PORT") or "")
local CA = os.getenv("MQTT_TLS_CA")
local CA_DER = os.getenv("MQTT_TLS_CA_DER")
local ROGUE_CA = os.getenv("MQTT_TLS_ROGUE_CA")
local BROKER_LOG = os.getenv("MQTT_BROKER_LOG")
local uniq = tostring(os.time()) .. tostring(math.random(1, 1e6))

local function client(id, port, host, extra)
  local o = { host = host or "127.0.0.1", port = port, client_id = id .. uniq, keepalive = 30, timeout = 3 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return mqtt.new(o)
end
local function tls_client(id, port, host, cafile)
  return client(id, port, host, { tls = { cafile = cafile or CA } })
end

local function broker_log()
  local f = io.open(BROKER_LOG); if not f then return "" end
  local s = f:read("*a"); f:close(); return s
end

-- Mosquitto logs "New client connected ... as <id>" only once it has read a CONNECT.
local function broker_saw_connect(id)
  socket.sleep(0.3)
  return broker_log():find(" as " .. id .. uniq, 1, true) ~= nil
end

describe("mqtt_tls host names", function()
  local san = { dns = { "localhost", "*.lab.example" }, ip = { "127.0.0.1", "::1" }, cn = { "cn.example" } }
  it("matches an IP address against the iPAddress entries only", function()
    assert.is_true(mqtt_tls.host_matches(san, "127.0.0.1"))
    assert.is_true(mqtt_tls.host_matches(san, "::1"))
    assert.is_false(mqtt_tls.host_matches(san, "127.0.0.2"))
    assert.is_false(mqtt_tls.host_matches({ dns = { "10.0.0.1" }, ip = {}, cn = {} }, "10.0.0.1"))
  end)
  it("matches names case-insensitively, a wildcard for one left-most label", function()
    assert.is_true(mqtt_tls.host_matches(san, "LocalHost"))
    assert.is_true(mqtt_tls.host_matches(san, "localhost."))
    assert.is_true(mqtt_tls.host_matches(san, "broker.lab.example"))
    assert.is_false(mqtt_tls.host_matches(san, "a.broker.lab.example"))
    assert.is_false(mqtt_tls.host_matches(san, "lab.example"))
    assert.is_false(mqtt_tls.host_matches({ dns = { "*.example" }, ip = {}, cn = {} }, "x.example"))
  end)
  it("uses the CN only when the certificate has no subjectAltName", function()
    assert.is_false(mqtt_tls.host_matches(san, "cn.example"))
    assert.is_true(mqtt_tls.host_matches({ dns = {}, ip = {}, cn = { "cn.example" } }, "cn.example"))
  end)
  it("tells IP addresses from names", function()
    for _, h in ipairs({ "127.0.0.1", "10.1.2.3", "::1", "fe80::1" }) do assert.is_true(mqtt_tls.is_ip(h), h) end
    for _, h in ipairs({ "localhost", "broker.lab.example", "1.2.3.example" }) do assert.is_false(mqtt_tls.is_ip(h), h) end
  end)

  -- The ClientHello LuaSec sends for host: a plain TCP listener takes it, never answers, and
  -- the handshake times out.
  local function client_hello(host)
    local server = assert(socket.bind("127.0.0.1", 0)); local _, p = server:getsockname()
    local sock = socket.tcp(); sock:settimeout(2); assert(sock:connect("127.0.0.1", p))
    local conn, err = mqtt_tls.wrap(sock, host, assert(CA, "MQTT_TLS_CA not set: run via run.sh"), 0.3)
    assert.is_nil(conn); assert.matches("tls handshake with " .. host .. " failed", err, 1, true)
    server:settimeout(2); local c = assert(server:accept()); c:settimeout(2)
    local head = assert(c:receive(5))
    local body = assert(c:receive(head:byte(4) * 256 + head:byte(5)))
    c:close(); server:close()
    assert.are.equal(0x16, head:byte(1)); assert.are.equal(1, body:byte(1)) -- handshake, ClientHello
    return body
  end
  it("sends SNI for a host name, none for an IP address (RFC 6066)", function()
    assert.is_truthy(client_hello("localhost"):find("localhost", 1, true))
    -- rustls (kaiabc run) would log "Illegal SNI extension" for it
    assert.is_nil(client_hello("127.0.0.1"):find("127.0.0.1", 1, true))
  end)

  it("asks LuaSec to verify the peer, TLS 1.2 or newer", function()
    local p = mqtt_tls.params("/x/ca.crt")
    assert.are.equal("client", p.mode); assert.are.equal("any", p.protocol)
    assert.are.equal("/x/ca.crt", p.cafile)
    assert.are.same({ "peer", "fail_if_no_peer_cert" }, p.verify)
    for _, o in ipairs({ "all", "no_sslv3", "no_tlsv1", "no_tlsv1_1" }) do
      local found = false
      for _, q in ipairs(p.options) do if q == o then found = true end end
      assert.is_true(found, o)
    end
  end)
end)

describe("MQTT over TLS against a real Mosquitto", function()
  assert(TLS_PORT and CA, "MQTT_TLS_PORT not set: run via firmware/tests/elm11/run.sh (it starts Mosquitto)")

  it("connects by IP and by name, verified, and round-trips QoS 1 over TLS", function()
    for _, host in ipairs({ "127.0.0.1", "localhost" }) do
      local sub, pub = tls_client("tsub", TLS_PORT, host), tls_client("tpub", TLS_PORT, host)
      assert(sub:connect()); assert(pub:connect())
      local proto = pub.sock:info("protocol")
      assert.is_truthy(proto == "TLSv1.2" or proto == "TLSv1.3", proto)
      local topic = "test/" .. uniq .. "/tls/" .. host
      assert.are.equal(1, sub:subscribe(topic, 1))
      assert.is_true(pub:publish(topic, "over-tls", 1, false))
      local m = assert(sub:poll(3))
      assert.are.equal("over-tls", m.payload)
      assert.is_true(sub:ping(3))
      sub:disconnect(); pub:disconnect()
    end
    assert.is_true(broker_saw_connect("tpub")) -- the log the fail-closed cases read is live
  end)

  it("a 300000-byte payload crosses TLS intact", function()
    local parts = {}
    for i = 1, 300000 do parts[i] = string.char(32 + (i * 7) % 90) end
    local payload = table.concat(parts)
    local a, b = tls_client("ta", TLS_PORT), tls_client("tb", TLS_PORT)
    local topic = "test/" .. uniq .. "/tlsbig"
    assert(a:connect()); assert(b:connect()); assert(b:subscribe(topic, 1))
    assert.is_true(a:publish(topic, payload, 1, false))
    local m = assert(b:poll(5))
    assert.is_true(m.payload == payload)
    a:disconnect(); b:disconnect()
  end)

  it("node transport: a reading over TLS reaches mosquitto_sub (TLS) and a plain subscriber", function()
    local id = "tlsnode" .. uniq
    local out = os.tmpname()
    os.execute(("mosquitto_sub -h 127.0.0.1 -p %d --cafile '%s' -t 'kaiabc/sensors/%s' -C 1 -W 8 > %s 2>&1 &")
      :format(TLS_PORT, CA, id, out))
    local spy = client("plainspy", PORT); assert(spy:connect())
    assert(spy:subscribe("kaiabc/sensors/" .. id, 1))
    socket.sleep(0.7)
    local t = mqtt_transport.new({ host = "127.0.0.1", port = TLS_PORT, node_id = id, api_key = "k",
      tls = { cafile = CA } })
    local res = t:upload({ '{"seq":1,"tls":true}' })
    assert.are.equal("accepted", res.kind); assert.are.equal(1, res.removed)
    assert.are.equal('{"seq":1,"tls":true}', assert(spy:poll(3)).payload)
    local got = ""
    for _ = 1, 80 do
      local f = io.open(out); got = f:read("*a"); f:close()
      if got:find('"tls":true', 1, true) then break end
      socket.sleep(0.1)
    end
    os.remove(out)
    assert.matches('{"seq":1,"tls":true}', got, 1, true)
    spy:publish("kaiabc/nodes/" .. id .. "/status", "", 1, true)
    t.client:disconnect(); spy:disconnect()
  end)

  it("fails closed against a certificate another CA signed: handshake error, no CONNECT", function()
    local c = tls_client("rogue", ROGUE_PORT)
    local ok, err = c:connect()
    assert.is_nil(ok)
    assert.matches("tls handshake with 127.0.0.1 failed", err, 1, true)
    assert.matches("certificate verify failed", err, 1, true)
    assert.is_false(c:connected())
    assert.is_false(broker_saw_connect("rogue"))
    -- and the node transport reports it as a retry, keeping the reading
    local t = mqtt_transport.new({ host = "127.0.0.1", port = ROGUE_PORT, node_id = "rogue2" .. uniq,
      api_key = "k", tls = { cafile = CA } })
    local res = t:upload({ '{"seq":1}' })
    assert.are.equal("retry", res.kind); assert.matches("certificate verify failed", res.err, 1, true)
  end)

  it("fails closed when the configured CA is not the broker's", function()
    local c = tls_client("wrongca", TLS_PORT, "127.0.0.1", ROGUE_CA)
    local ok, err = c:connect()
    assert.is_nil(ok); assert.matches("certificate verify failed", err, 1, true)
    assert.is_false(broker_saw_connect("wrongca"))
  end)

  it("fails closed when the certificate is for another name", function()
    local c = tls_client("wrongname", WRONGNAME_PORT)
    local ok, err = c:connect()
    assert.is_nil(ok)
    assert.matches("not for 127.0.0.1 (it names other.invalid)", err, 1, true)
    assert.is_false(broker_saw_connect("wrongname"))
  end)

  it("does not fall back to plain MQTT when the port speaks no TLS", function()
    local c = tls_client("noplain", PORT)
    local ok, err = c:connect()
    assert.is_nil(ok); assert.matches("tls handshake", err, 1, true)
    assert.is_false(broker_saw_connect("noplain"))
  end)

  it("a CA file in DER is refused by LuaSec with an error value", function()
    local c = tls_client("der", TLS_PORT, "127.0.0.1", CA_DER)
    local ok, err = c:connect()
    assert.is_nil(ok); assert.matches("^tls: ", err)
  end)

  describe("without LuaSec", function()
    local saved
    before_each(function()
      saved = package.loaded.ssl
      package.loaded.ssl = nil
      package.preload.ssl = function() error("module 'ssl' not found") end
    end)
    after_each(function()
      package.preload.ssl = nil
      package.loaded.ssl = saved
    end)

    it("refuses to connect at all, with a clear message", function()
      local server = assert(socket.bind("127.0.0.1", 0)); local _, p = server:getsockname()
      server:settimeout(0.3)
      local c = tls_client("noluasec", p)
      local ok, err = c:connect()
      assert.is_nil(ok)
      assert.matches('LuaSec (require "ssl") is not available', err, 1, true)
      assert.is_nil((server:accept()))   -- not even a TCP connection, so no plaintext
      server:close()
      local t = mqtt_transport.new({ host = "127.0.0.1", port = p, node_id = "n", api_key = "k", tls = { cafile = CA } })
      local res = t:upload({ '{"seq":1}' })
      assert.are.equal("retry", res.kind); assert.matches("LuaSec", res.err, 1, true)
    end)

    it("config with mqtt_tls names the problem at start-up", function()
      local c = H.read_json(H.dir .. "/../../elm11/config.example.json")
      c.transport = "mqtt"; c.mqtt_tls = true; c.mqtt_ca_file = CA
      local ok, err = pcall(config.validate, c)
      assert.is_false(ok); assert.matches("LuaSec", err, 1, true)
    end)
  end)
end)

describe("config for MQTT over TLS", function()
  local function base()
    local c = H.read_json(H.dir .. "/../../elm11/config.example.json")
    c.transport = "mqtt"
    return c
  end
  it("mqtt_tls defaults to false and keeps the plain port", function()
    local c = base(); c.mqtt_tls = nil
    c = config.validate(c)
    assert.is_false(c.mqtt_tls); assert.are.equal(1883, c.mqtt_port)
  end)
  it("with mqtt_tls and no port, the port is 8883", function()
    local c = base(); c.mqtt_port = nil; c.mqtt_tls = true; c.mqtt_ca_file = CA
    c = config.validate(c)
    assert.are.equal(8883, c.mqtt_port); assert.are.equal("8883", tostring(c.mqtt_port))
  end)
  it("an explicit port wins", function()
    local c = base(); c.mqtt_tls = true; c.mqtt_ca_file = CA; c.mqtt_port = 18883
    assert.are.equal(18883, config.validate(c).mqtt_port)
  end)
  local bad = {
    { "mqtt_tls must be true or false", function(c) c.mqtt_tls = "yes" end },
    { "mqtt_ca_file must be a non-empty string", function(c) c.mqtt_tls = true; c.mqtt_ca_file = nil end },
    { "mqtt_ca_file: cannot read /nonexistent/ca.crt", function(c) c.mqtt_tls = true; c.mqtt_ca_file = "/nonexistent/ca.crt" end },
    { "is not a PEM certificate", function(c) c.mqtt_tls = true; c.mqtt_ca_file = CA_DER end },
  }
  for _, b in ipairs(bad) do
    it("names the problem: " .. b[1], function()
      local c = base(); b[2](c)
      local ok, err = pcall(config.validate, c)
      assert.is_false(ok); assert.matches(b[1], err, 1, true)
    end)
  end
  it("app.build hands the CA to the MQTT client", function()
    local c = base(); c.mqtt_tls = true; c.mqtt_ca_file = CA; c.mqtt_port = nil
    c.buffer_path = H.tmpdir() .. "/buf"
    c = config.validate(c)
    local set = H.read_json(H.dir .. "/../reference/vectors.json").sets[1]
    local hal = require("fake_hal").with_bme280(c.bme280.address, set, set.cases[1])
    local a = require("app").build(c, hal, function() end)
    assert.are.same({ cafile = CA }, a.transport.client.tls)
    assert.are.equal(8883, a.transport.client.port)
  end)
end)
