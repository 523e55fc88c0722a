-- Child process of tls_outage_spec.lua: the ELM11 MQTT transport over TLS against a private
-- Mosquitto that this script starts, stops (how: arg 4) and starts again on the same port.
-- Run in its own process under `timeout`, so a client that spins or hangs fails the spec
-- instead of hanging busted. One line per fact on stdout: "<key> <value>".
--
-- Usage: lua tls_outage_client.lua MOSQUITTO_CONF PORT CA_FILE KILL_SIGNAL
local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = here .. "/../../elm11/?.lua;" .. package.path

local socket = require("socket")
local mqtt_transport = require("mqtt_transport")

local conf, port, ca, sig = arg[1], tonumber(arg[2]), arg[3], arg[4]

local function out(k, v)
  io.stdout:write(k, " ", tostring(v), "\n")
  io.stdout:flush()
end

local function listening()
  local s = socket.tcp(); s:settimeout(0.2)
  local ok = s:connect("127.0.0.1", port); s:close()
  return ok ~= nil
end

local pid
local function start_broker()
  local mosq = io.popen("command -v mosquitto || echo /usr/sbin/mosquitto"):read("*l")
  local p = io.popen(("'%s' -c '%s' >>'%s.log' 2>&1 & echo $!"):format(mosq, conf, conf))
  pid = tonumber(p:read("*l")); p:close()
  out("broker_pid", pid) -- the spec kills it if this process dies first
  for _ = 1, 100 do
    if listening() then return end
    socket.sleep(0.05)
  end
  error("mosquitto did not listen on " .. port)
end

local function stop_broker(delay)
  -- kill -9: the TCP connection ends with no TLS close_notify, as when `kaiabc run` exits
  -- (LuaSec: "unexpected eof while reading"); -TERM: Mosquitto sends close_notify ("closed").
  local cmd = ("kill -%s %d"):format(sig, pid)
  if delay then
    os.execute(("(sleep %s; %s) >/dev/null 2>&1 &"):format(delay, cmd))
    return
  end
  os.execute(cmd)
  for _ = 1, 100 do -- gone once its listener is (a zombie would still answer kill -0)
    if not listening() then break end
    socket.sleep(0.05)
  end
  socket.sleep(0.2)
end

-- Runs f, reporting its wall and CPU seconds as <name>_wall / <name>_cpu.
local function timed(name, f)
  local w, c = socket.gettime(), os.clock()
  local r = f()
  out(name .. "_wall", ("%.3f"):format(socket.gettime() - w))
  out(name .. "_cpu", ("%.3f"):format(os.clock() - c))
  return r
end

local t = mqtt_transport.new({ host = "127.0.0.1", port = port, node_id = "outage" .. os.time(),
  api_key = "k", timeout = 2, tls = { cafile = ca } })
local n = 0
local function upload()
  n = n + 1
  return t:upload({ ('{"seq":%d}'):format(n) })
end

start_broker()
out("first", upload().kind)
out("first_connected", t.client:connected())

-- 1. The broker goes away between steps; the node's non-blocking poll (node:step) notices.
stop_broker()
timed("poll0", function() t:poll(0) end)
out("poll0_connected", t.client:connected())
out("poll0_lost", t.client.lost)
-- Down: an upload is a prompt retry (connection refused), the reading stays buffered.
local r = timed("down", upload)
out("down", r.kind)
out("down_err", r.err)

-- 2. Back on the same port: the next upload reconnects.
start_broker()
out("back", upload().kind)

-- 3. The broker goes away while the client waits in a blocking poll.
stop_broker(0.5)
timed("poll5", function() t:poll(5) end)
out("poll5_connected", t.client:connected())
socket.sleep(0.3)

-- 4. Back again; then it goes away and the next call is an upload (publish, PUBACK wait).
start_broker()
out("back2", upload().kind)
stop_broker()
r = timed("publish", upload)
out("publish", r.kind)
out("publish_err", r.err)
out("publish_connected", t.client:connected())

-- 5. And back once more.
start_broker()
out("back3", upload().kind)
t.client:disconnect()
os.execute("kill -TERM " .. pid)
out("done", true)
