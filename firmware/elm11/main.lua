-- Entry point on the ELM11: load config, make the real HAL, build the node (app.lua), loop forever.
local config = require("config")
local cfg = config.load(arg and arg[1] or "config.json")
local hal = require("hal").elm11(cfg.pwm.pin, cfg.pwm.freq)
local app = require("app")

local function log(m) print(os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(hal.now())) .. " " .. m) end

local n = app.build(cfg, hal, log).node

while true do
  local t0 = hal.now()
  local ok, err = pcall(n.step, n)
  if not ok then log("step error: " .. tostring(err)) end
  local left = cfg.sample_interval_s - (hal.now() - t0)
  if left > 0 then hal.sleep(left) end
end
