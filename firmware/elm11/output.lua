-- Output (PWM) control. Live: apply the server's duty. Offline (no fresh output for more
-- than 3 sample intervals): follow the learned trajectory, not a frozen value.
--   * a duty curve over circadian time, 48 bins of 0.5 h, updated (latest wins) from every
--     output received;
--   * circadian time advances at 24/period_hours circadian hours per real hour since the
--     last output;
--   * duty = circular linear interpolation between the nearest filled bins (bin centres);
--     an empty curve holds the last duty.
local M = {}
M.__index = M
M.NBINS = 48
M.BIN_H = 24 / M.NBINS

local floor = math.floor

-- "YYYY-MM-DDTHH:MM:SS[.fff]Z" -> epoch seconds (UTC), or nil.
function M.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)")
  if not y then return nil end
  if not (s:match("Z$") or s:match("%+00:?00$")) then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from civil (H. Hinnant), arithmetic only
  if mo <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

function M.new(opts)
  local self = setmetatable({}, M)
  self.hal = assert(opts.hal, "output: hal required")
  self.interval = opts.sample_interval_s or 60
  self.curve = {}            -- curve[1..48] = duty or nil
  self.duty = nil            -- last applied duty
  self.last = nil            -- {t=epoch, ct=, period=}
  self.mode = "none"
  return self
end

local function clamp_duty(d)
  d = floor(d + 0.5)
  if d < 0 then return 0 elseif d > 255 then return 255 end
  return d
end

local function bin_of(ct) return floor((ct % 24) / M.BIN_H) % M.NBINS + 1 end

function M:apply(d)
  d = clamp_duty(d)
  if d ~= self.duty then self.hal.pwm_set(d) end
  self.duty = d
  return d
end

-- msg: decoded server output (MQTT) or polled state. Returns the applied duty, or nil, err.
function M:on_output(msg, now)
  if type(msg) ~= "table" then return nil, "output: not an object" end
  local duty = tonumber(msg.pwm_duty or msg.output_pwm)
  if not duty then return nil, "output: no pwm_duty/output_pwm" end
  local ct, period = tonumber(msg.circadian_time), tonumber(msg.period_hours)
  -- reference time: the server's timestamp when plausible (retained MQTT output may be old)
  local t = M.parse_iso8601(msg.timestamp)
  if not t or t > now + 60 then t = now end
  if ct and ct >= 0 and ct <= 24 then
    self.curve[bin_of(ct)] = clamp_duty(duty)
    if period and period > 0 then
      if not self.last or t >= self.last.t then self.last = { t = t, ct = ct % 24, period = period } end
    end
  end
  self.last_rx = math.max(self.last_rx or t, t)
  self.mode = "live"
  return self:apply(duty)
end

-- Duty predicted by the learned curve at circadian time ct, or nil if the curve is empty.
function M:predict(ct)
  ct = ct % 24
  local filled = {}
  for i = 1, M.NBINS do if self.curve[i] then filled[#filled + 1] = i end end
  if #filled == 0 then return nil end
  if #filled == 1 then return self.curve[filled[1]] end
  local function centre(i) return (i - 0.5) * M.BIN_H end
  -- previous filled bin (centre <= ct, circularly) and next filled bin (centre > ct)
  local prev, nxt
  for _, i in ipairs(filled) do
    if centre(i) <= ct then prev = i end
    if not nxt and centre(i) > ct then nxt = i end
  end
  prev = prev or filled[#filled]
  nxt = nxt or filled[1]
  local a = (ct - centre(prev)) % 24
  local span = (centre(nxt) - centre(prev)) % 24
  if span == 0 then return self.curve[prev] end
  local f = a / span
  return self.curve[prev] + (self.curve[nxt] - self.curve[prev]) * f
end

-- Estimated circadian time at `now` from the last output.
function M:circadian_time(now)
  if not self.last then return nil end
  local hours = (now - self.last.t) / 3600
  return (self.last.ct + hours * 24 / self.last.period) % 24
end

-- Call once per loop. Returns duty, mode ("live" | "offline" | "none").
function M:tick(now)
  if not self.last_rx then self.mode = "none"; return self.duty, self.mode end
  if now - self.last_rx <= 3 * self.interval then
    self.mode = "live"; return self.duty, self.mode
  end
  self.mode = "offline"
  local ct = self:circadian_time(now)
  local d = ct and self:predict(ct)
  if d then self:apply(d) end -- empty curve / no trajectory: hold the last duty
  return self.duty, self.mode
end

return M
