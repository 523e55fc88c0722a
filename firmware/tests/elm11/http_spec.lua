local H = require("helper")
local cjson = require("cjson")
local socket = require("socket")
local http_transport = require("http_transport")
local buffer = require("buffer")
local seq = require("seq")
local output = require("output")
local node = require("node")
local bme = require("bme280")
local fake = require("fake_hal")
local V = H.read_json(H.dir .. "/../reference/vectors.json")

local LUA = os.getenv("LUA") or (_VERSION == "Lua 5.1" and "lua5.1" or "lua5.3")

local Server = {}
Server.__index = Server
function Server.start(dir, port)
  local s = setmetatable({ dir = dir }, Server)
  os.remove(dir .. "/port")
  os.execute(("sh -c 'echo $$ > %s/pid; exec %s %s/http_server.lua %s %s' >%s/server.err 2>&1 &")
    :format(dir, LUA, H.dir, dir, tostring(port or 0), dir))
  for _ = 1, 200 do
    local f = io.open(dir .. "/port")
    if f then s.port = tonumber(f:read("*a")); f:close(); break end
    socket.sleep(0.02)
  end
  assert(s.port, "test HTTP server did not start")
  return s
end
function Server:program(t)
  local f = io.open(self.dir .. "/program", "w"); f:write(cjson.encode(t)); f:close()
end
function Server:stop()
  local f = io.open(self.dir .. "/pid"); local pid = f:read("*l"); f:close()
  os.execute("kill " .. pid .. " 2>/dev/null")
  -- wait until the port refuses connections
  for _ = 1, 100 do
    local c = socket.tcp(); c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", self.port); c:close()
    if not ok then return end
    socket.sleep(0.02)
  end
end
function Server:requests()
  local out = {}
  local f = io.open(self.dir .. "/requests.log")
  if not f then return out end
  for l in f:lines() do out[#out + 1] = cjson.decode(l) end
  f:close()
  return out
end
-- seqs of all readings the server answered 202 for
function Server:accepted_seqs()
  local out = {}
  for _, r in ipairs(self:requests()) do
    if r.method == "POST" and r.status == 202 then
      for _, x in ipairs(cjson.decode(r.body)) do out[#out + 1] = x.seq end
    end
  end
  return out
end

local function make_node(dir, port, hal, opts)
  opts = opts or {}
  local cfg = { node_id = "elm11_001", api_key = opts.key or "k-123", sample_interval_s = 60 }
  local dev = bme.new(hal, { address = 0x76 })
  local t = http_transport.new({ server_url = "http://127.0.0.1:" .. port .. "/", api_key = cfg.api_key,
    node_id = cfg.node_id, timeout = 2 })
  local logs = {}
  local n = node.new({ cfg = cfg, hal = hal, sensor = dev, buffer = buffer.open(dir .. "/buf", opts.capacity or 100),
    seq = seq.open(dir .. "/seq"), transport = t, output = output.new({ hal = hal, sample_interval_s = 60 }),
    batch_size = opts.batch_size or 3, log = function(m) logs[#logs + 1] = m end })
  return n, logs
end

local function range(a, b) local t = {} for i = a, b do t[#t + 1] = i end return t end

describe("HTTP transport against a local LuaSocket server", function()
  local dir, srv, hal
  before_each(function()
    dir = H.tmpdir()
    srv = Server.start(dir)
    hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
  end)
  after_each(function() srv:stop(); os.execute("rm -rf '" .. dir .. "'") end)

  it("POSTs a JSON array to /v1/sensors/batch with X-API-Key and Content-Type", function()
    srv:program({ status = 202 })
    local n = make_node(dir, srv.port, hal)
    local r, st = n:step()
    assert.are.equal("empty", st)
    local req = srv:requests()[1]
    assert.are.equal("POST", req.method)
    assert.are.equal("/v1/sensors/batch", req.path)
    assert.are.equal("k-123", req.api_key)
    assert.are.equal("application/json", req.content_type)
    local arr = cjson.decode(req.body)
    assert.are.equal(1, #arr)
    assert.are.equal(r.seq, arr[1].seq)
    assert.are.equal(298.23, arr[1].temperature_kelvin) -- 25.08 degC datasheet example
    assert.are.equal(0, n.buffer:count())
  end)

  it("an outage in the middle loses nothing, keeps order, sends no duplicates", function()
    srv:program({ status = 202 })
    local n = make_node(dir, srv.port, hal)
    for _ = 1, 3 do n:step(); hal.advance(60) end
    assert.are.same(range(1, 3), srv:accepted_seqs())
    local port = srv.port
    srv:stop()                                    -- server down: connection refused
    for _ = 1, 7 do n:step(); hal.advance(60) end
    assert.are.equal(7, n.buffer:count())
    assert.is_true(n.stats.retries >= 1)
    srv = Server.start(dir, port)                 -- back up on the same port
    srv:program({ status = 202 })
    for _ = 1, 20 do
      n:step(); hal.advance(60)
      if n.buffer:count() == 0 then break end
    end
    assert.are.equal(0, n.buffer:count())
    local seqs = srv:accepted_seqs()
    assert.are.same(range(1, #seqs), seqs)        -- every seq once, in order
    assert.is_true(#seqs >= 11)
  end)

  it("a 5xx keeps the batch buffered and retries it later", function()
    srv:program({ status = 503 })
    local n = make_node(dir, srv.port, hal)
    n:step(); hal.advance(60)
    assert.are.equal(1, n.buffer:count())
    srv:program({ status = 202 })
    for _ = 1, 5 do n:step(); hal.advance(60) end
    assert.are.equal(0, n.buffer:count())
    assert.are.same(range(1, 6), srv:accepted_seqs())
  end)

  it("a 401 keeps the node running and its readings buffered, with back-off", function()
    srv:program({ status = 401 })
    local n, logs = make_node(dir, srv.port, hal, { key = "wrong" })
    for _ = 1, 10 do
      local r = n:step()                          -- must not raise
      assert.are.equal("good", r.quality)
      hal.advance(60)
    end
    assert.are.equal(10, n.buffer:count())
    local posts = 0
    for _, q in ipairs(srv:requests()) do if q.method == "POST" then posts = posts + 1 end end
    assert.is_true(posts >= 1 and posts <= 2, "backed off, got " .. posts .. " POSTs in 10 min")
    assert.matches("API key", table.concat(logs, "\n"))
    -- key fixed on the server side: everything goes through, in order
    srv:program({ status = 202 })
    for _ = 1, 10 do hal.advance(60); n:step(); if n.buffer:count() == 0 then break end end
    assert.are.equal(0, n.buffer:count())
    local seqs = srv:accepted_seqs()
    assert.are.same(range(1, #seqs), seqs)
  end)

  it("429 honours Retry-After", function()
    srv:program({ status = 429, retry_after = "300" })
    local n = make_node(dir, srv.port, hal)
    n:step()
    srv:program({ status = 202 })
    hal.advance(120); n:step()
    assert.are.equal(2, n.buffer:count())         -- still inside Retry-After
    hal.advance(200); n:step()
    assert.are.equal(0, n.buffer:count())
  end)

  it("rejected readings are dropped, not retried; the rest counted as sent", function()
    srv:program({ status = 202, reject_seq = { 2 } })
    local n, logs = make_node(dir, srv.port, hal, { batch_size = 10 })
    n:step(); hal.advance(60)
    srv:program({ status = 503 })
    n:step(); hal.advance(60)                     -- seq 2 buffered
    srv:program({ status = 202, reject_seq = { 2 } })
    n:step()
    assert.are.equal(0, n.buffer:count())
    assert.are.equal(1, n.stats.rejected)
    assert.are.equal(2, n.stats.sent)
    assert.matches("OUT_OF_RANGE", table.concat(logs, "\n"))
  end)

  it("polls the oscillator state and drives the PWM from output_pwm", function()
    srv:program({ status = 202, state = { output_pwm = 173, circadian_time = 6.2, period_hours = 24.1,
      phase = 0.26, koa_metric = 0.4, timestamp = "2026-11-27T13:05:00Z" } })
    local n = make_node(dir, srv.port, hal)
    n:step()
    local saw
    for _, q in ipairs(srv:requests()) do
      if q.method == "GET" then saw = q end
    end
    assert.are.equal("/v1/oscillator/state?node_id=elm11_001", saw.path)
    assert.are.equal("k-123", saw.api_key)
    assert.are.equal(173, hal.duty)
  end)
end)
