-- A broker that goes away under an MQTT-over-TLS session (LuaSec): the client must notice at
-- once, drop the connection, fail the upload as a retry (the node keeps the reading and backs
-- off) without spinning, and reconnect once the broker is back. The client runs in a child
-- process (tls_outage_client.lua) under `timeout`: LuaSec 1.2 loops forever inside its C code
-- when a connection is read again after an error, which would otherwise hang busted.
-- The broker is a private Mosquitto with a TLS listener, using the certificates of the one
-- run.sh starts (tests/broker.sh), on its own port, killed and restarted by the child.
local H = require("helper")
local socket = require("socket")

local CA = os.getenv("MQTT_TLS_CA")
local LUA = _VERSION == "Lua 5.1" and "lua5.1" or "lua5.3"
local LIMIT = 30 -- seconds for the whole child run; it takes a few

local function run_child(sig)
  assert(CA, "MQTT_TLS_CA not set: run via firmware/tests/elm11/run.sh (it starts Mosquitto)")
  local certs = CA:match("^(.*)/[^/]*$")
  local dir = H.tmpdir()
  local s = assert(socket.bind("127.0.0.1", 0)); local _, port = s:getsockname(); s:close()
  local conf = dir .. "/mosquitto.conf"
  local f = assert(io.open(conf, "w"))
  f:write(("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type all\n" ..
    "cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\ntls_version tlsv1.2\n")
    :format(port, certs, certs, certs))
  f:close()
  local p = io.popen(("timeout -s KILL %d %s '%s/tls_outage_client.lua' '%s' %d '%s' %s 2>&1; echo \"exit $?\"")
    :format(LIMIT, LUA, H.dir, conf, port, CA, sig))
  local text = p:read("*a"); p:close()
  local facts, pids = {}, {}
  for k, v in text:gmatch("([%w_]+) ([^\n]*)") do
    facts[k] = v
    if k == "broker_pid" then pids[#pids + 1] = v end
  end
  for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  local lf = io.open(conf .. ".log"); local blog = lf and lf:read("*a") or ""; if lf then lf:close() end
  os.execute("rm -rf '" .. dir .. "'")
  local ctx = "\n--- client output:\n" .. text .. "--- broker log (tail):\n" .. blog:sub(-1500)
  assert(facts.exit ~= "137", ("the client did not finish within %d s (it spun or hung)"):format(LIMIT) .. ctx)
  assert(facts.done == "true" and facts.exit == "0", "the client failed" .. ctx)
  return facts, ctx
end

local function num(facts, k) return tonumber(facts[k]) end

for _, case in ipairs({
  { sig = "9", what = "killed (TCP closed with no close_notify, as `kaiabc run` on SIGTERM)" },
  { sig = "TERM", what = "stopped (close_notify)" },
}) do
  describe("MQTT over TLS when the broker is " .. case.what, function()
    local facts, ctx
    setup(function() facts, ctx = run_child(case.sig) end)

    it("the first upload goes through", function()
      assert.are.equal("accepted", facts.first, ctx)
      assert.are.equal("true", facts.first_connected, ctx)
    end)

    it("a non-blocking poll notices the lost link at once, without spinning", function()
      assert.are.equal("false", facts.poll0_connected, ctx)
      assert.is_true(num(facts, "poll0_wall") < 1, ctx)
      assert.is_true(num(facts, "poll0_cpu") < 0.5, ctx)
    end)

    it("uploads while it is down are a prompt retry (the reading stays buffered)", function()
      assert.are.equal("retry", facts.down, ctx)
      assert.matches("refused", facts.down_err, 1, true)
      assert.is_true(num(facts, "down_wall") < 3, ctx)
      assert.is_true(num(facts, "down_cpu") < 0.5, ctx)
    end)

    it("a blocking poll returns as soon as the link drops, not at its timeout", function()
      assert.are.equal("false", facts.poll5_connected, ctx)
      assert.is_true(num(facts, "poll5_wall") < 3, ctx)
      assert.is_true(num(facts, "poll5_cpu") < 0.5, ctx)
    end)

    it("a publish on a dead link fails promptly as a retry and drops the connection", function()
      assert.are.equal("retry", facts.publish, ctx)
      assert.are.equal("false", facts.publish_connected, ctx)
      assert.is_true(num(facts, "publish_wall") < 3, ctx)
      assert.is_true(num(facts, "publish_cpu") < 0.5, ctx)
    end)

    it("reconnects and uploads each time the broker is back", function()
      assert.are.equal("accepted", facts.back, ctx)
      assert.are.equal("accepted", facts.back2, ctx)
      assert.are.equal("accepted", facts.back3, ctx)
    end)
  end)
end
