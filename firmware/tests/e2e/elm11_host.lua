-- Runs the real ELM11 firmware (app.build) on the host against a real server, step by step from stdin.
--
-- Usage: lua5.3 firmware/tests/e2e/elm11_host.lua CONFIG_PATH   (also lua5.1; any cwd)
-- Hardware is firmware/tests/elm11/fake_hal.lua: a BME280 with set 1 / case 1 of
-- firmware/tests/reference/vectors.json, a recorded PWM and a clock the driver sets.
-- Commands on stdin, one per line; one JSON line on stdout after each:
--   step T   set the clock to T (UTC epoch s), run one node step (sample, flush, output)
--   poll T   set the clock to T, fetch the server's output (no sample), run the output tick
--   quit     print {"event":"bye",...} and exit 0
-- Logs go to stderr. A protocol or setup error exits non-zero with a message on stderr.

local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = here .. "/../../elm11/?.lua;" .. here .. "/../elm11/?.lua;" .. package.path

local function die(msg, code)
  io.stderr:write("elm11_host: ", tostring(msg), "\n")
  os.exit(code or 1)
end

local function main()
  local cjson = require("cjson")
  local socket = require("socket")
  local config = require("config")
  local fake = require("fake_hal")
  local app = require("app")
  local util = require("util")

  local cfg_path = arg and arg[1]
  if not cfg_path then die("usage: elm11_host.lua CONFIG_PATH", 2) end
  local cfg = config.load(cfg_path)

  local vpath = here .. "/../reference/vectors.json"
  local vtext = util.read_file(vpath)
  if not vtext then error("cannot read " .. vpath) end
  local set = cjson.decode(vtext).sets[1]
  local hal = fake.with_bme280(cfg.bme280.address, set, set.cases[1])
  -- The driver owns the wall clock. The BME280 driver's status polling calls hal.sleep(0.002),
  -- which in fake_hal also advances hal.t; here it only advances the monotonic ms (which the
  -- driver's measurement timeout uses), so hal.now() stays exactly the T the driver set.
  hal.sleep = function(s) hal.ms = hal.ms + s * 1000 end

  local function log(m) io.stderr:write(tostring(m), "\n") end

  local a = app.build(cfg, hal, log)
  local n, out, tr = a.node, a.output, a.transport

  -- Record every server output message the output module accepted and applied. node:on_output
  -- is the single entry for both transports (MQTT callback in app.lua, HTTP in node:step and
  -- in "poll" below); an instance field shadows the method, so those calls all land here.
  local applied = {}
  local orig_on_output = n.on_output
  n.on_output = function(self, msg, now)
    local d = orig_on_output(self, msg, now)
    if d ~= nil and type(msg) == "table" then
      -- pwm_duty as received; the HTTP state has output_pwm instead (output.lua reads either).
      local pd = msg.pwm_duty
      if pd == nil then pd = msg.output_pwm end
      applied[#applied + 1] = { timestamp = msg.timestamp, seq = msg.seq, pwm_duty = pd }
    end
    return d
  end

  local function jv(v) -- JSON value, nil -> null
    if v == nil then return "null" end
    return cjson.encode(v)
  end

  -- output.lua keeps an explicit mode: "none" (no output ever received), "live" (an output
  -- within the last 3 sample intervals) or "offline" (none that fresh: it follows the learned
  -- curve, or holds the last duty when the curve or the period is unknown). "live" is reported
  -- as "online". The mode is the one set by the last on_output/tick of the command.
  local MODES = { live = "online", offline = "offline", none = "none" }

  local function report(event, seq)
    -- built by hand: lua-cjson 2.1 encodes an empty table as {} and "applied" must be a list
    local items = {}
    for i, r in ipairs(applied) do
      items[i] = "{\"timestamp\":" .. jv(r.timestamp) .. ",\"seq\":" .. jv(r.seq) ..
        ",\"pwm_duty\":" .. jv(r.pwm_duty) .. "}"
    end
    local mode = MODES[out.mode]
    if not mode then error("output module in unknown mode " .. tostring(out.mode)) end
    io.stdout:write("{\"event\":", jv(event), ",\"seq\":", jv(seq),
      ",\"buffered\":", jv(n.buffer:count()), ",\"duty\":", jv(hal.duty),
      ",\"mode\":", jv(mode), ",\"stats\":", cjson.encode(n.stats),
      ",\"applied\":[", table.concat(items, ","), "]}\n")
    io.stdout:flush()
  end

  local function parse_t(cmd, s)
    local t = s and s:match("^%-?%d+$") and tonumber(s)
    if not t then die(("bad command %q: %s needs an integer time (unix seconds)"):format(cmd .. " " .. (s or ""), cmd), 2) end
    return t
  end

  local function do_step(T)
    hal.t = T
    local before = n.seq.next
    -- exactly as main.lua: an error is logged, never fatal
    local ok, r = pcall(n.step, n)
    if not ok then log("step error: " .. tostring(r)) end
    local s
    if ok and type(r) == "table" then s = r.seq
    elseif n.seq.next ~= before then s = n.seq.next - 1 end -- failed after taking a seq
    return s
  end

  local function do_poll(T)
    hal.t = T
    local ok, err = pcall(function()
      if cfg.transport == "mqtt" then
        -- node:step's own poll is non-blocking; here wait up to 1.5 s of real time for output.
        -- The transport only connects in upload(): if it is not connected, nothing can arrive.
        local deadline = socket.gettime() + 1.5
        while #applied == 0 and tr.client:connected() do
          local left = deadline - socket.gettime()
          if left <= 0 then break end
          tr:poll(math.min(0.1, left))
        end
      else
        local state, gerr = tr:get_output()
        if type(state) == "table" then n:on_output(state, T)
        else log("get_output: " .. tostring(gerr)) end
      end
      out:tick(T)
    end)
    if not ok then log("poll error: " .. tostring(err)) end
  end

  for line in io.stdin:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" then
      local cmd, rest = line:match("^(%S+)%s*(.*)$")
      applied = {}
      if cmd == "step" then
        local s = do_step(parse_t(cmd, rest))
        report("step", s)
      elseif cmd == "poll" then
        do_poll(parse_t(cmd, rest))
        report("poll", nil)
      elseif cmd == "quit" then
        report("bye", nil)
        os.exit(0)
      else
        die(("unknown command %q (expected step T, poll T or quit)"):format(line), 2)
      end
    end
  end
  die("stdin closed without quit", 3)
end

local ok, err = xpcall(main, function(e) return debug.traceback(tostring(e), 2) end)
if not ok then die("fatal: " .. tostring(err), 1) end
