-- The sensor-node loop as a testable step function. Everything is injected:
--   hal (now/sleep/pwm_set), sensor (Dev:read()), buffer, seq, transport, output, log.
-- transport: upload(entries) -> result (see http_transport.lua); get_output() -> table|nil
-- (optional; MQTT delivers output by callback via node:on_output).
local reading = require("reading")
local M = {}
M.__index = M

function M.new(o)
  local self = setmetatable({}, M)
  self.cfg = assert(o.cfg, "node: cfg required")
  self.hal, self.sensor, self.buffer, self.seq = o.hal, o.sensor, o.buffer, o.seq
  self.transport, self.output = o.transport, o.output
  self.log = o.log or function() end
  self.batch_size = o.batch_size or 50
  self.max_batches = o.max_batches or 10
  self.interval = self.cfg.sample_interval_s
  self.max_backoff = o.max_backoff or 900
  self.auth_backoff = o.auth_backoff or 300
  self.backoff = 0
  self.next_try = 0
  self.stats = { sent = 0, rejected = 0, auth_failures = 0, retries = 0, read_failures = 0 }
  return self
end

function M:sample(now)
  local m, err = self.sensor:read()
  if not m then
    self.stats.read_failures = self.stats.read_failures + 1
    self.log("sensor read failed: " .. tostring(err))
  end
  local s, serr = self.seq:take()
  if not s then
    self.log("cannot save the sequence number (" .. tostring(serr) .. "); reading skipped")
    return nil
  end
  local r = reading.build(self.cfg.node_id, s, now, m)
  local ok, perr = self.buffer:push(reading.encode(r))
  if not ok then self.log("buffer write failed: " .. tostring(perr)) end
  return r
end

local function grow(self, floor_s)
  local b = self.backoff > 0 and self.backoff * 2 or self.interval
  if b < floor_s then b = floor_s end
  if b > self.max_backoff then b = self.max_backoff end
  self.backoff = b
  return b
end

-- Upload buffered readings oldest first. Never raises.
function M:flush(now)
  if now < self.next_try then return "waiting" end
  for _ = 1, self.max_batches do
    local batch = self.buffer:peek(self.batch_size)
    if #batch == 0 then return "empty" end
    local ok, res = pcall(self.transport.upload, self.transport, batch)
    if not ok then res = { kind = "retry", err = tostring(res) } end
    if res.kind == "accepted" or res.kind == "bad_batch" then
      self.buffer:remove(res.removed or #batch)
      self.stats.sent = self.stats.sent + (res.accepted or 0)
      local nrej = res.rejected and #res.rejected or 0
      if res.kind == "bad_batch" then nrej = #batch end
      if nrej > 0 then
        self.stats.rejected = self.stats.rejected + nrej
        for _, rj in ipairs(res.rejected or {}) do
          self.log(("reading rejected: index=%s code=%s %s"):format(tostring(rj.index), tostring(rj.code), tostring(rj.message)))
        end
        if res.kind == "bad_batch" then self.log("batch rejected with HTTP " .. tostring(res.status) .. ", dropped") end
      end
      self.backoff = 0
      self.next_try = 0
      if (res.removed or #batch) < #batch then return "partial" end -- e.g. MQTT lost mid-batch
    elseif res.kind == "auth" then
      self.stats.auth_failures = self.stats.auth_failures + 1
      local b = grow(self, self.auth_backoff)
      self.next_try = now + b
      self.log(("server refused the API key (HTTP %s); readings kept, retry in %ds"):format(tostring(res.status), b))
      return "auth"
    elseif res.kind == "rate_limited" then
      self.next_try = now + (res.retry_after or 60)
      self.log("rate limited; retry after " .. tostring(res.retry_after) .. "s")
      return "rate_limited"
    else
      self.stats.retries = self.stats.retries + 1
      local b = grow(self, 0)
      self.next_try = now + b
      self.log(("upload failed (%s); %d buffered, retry in %ds"):format(tostring(res.status or res.err), self.buffer:count(), b))
      return "retry"
    end
  end
  return "more"
end

function M:on_output(msg, now)
  if not self.output then return end
  local d, err = self.output:on_output(msg, now or self.hal.now())
  if not d then self.log(tostring(err)) end
  return d
end

-- One loop iteration: sample, upload, update output. Returns the reading and flush status.
function M:step()
  local now = self.hal.now()
  local r = self:sample(now)
  local st = self:flush(now)
  if self.transport.get_output and self.output then
    local ok, state = pcall(self.transport.get_output, self.transport)
    if ok and type(state) == "table" then self:on_output(state, now) end
  end
  if self.transport.poll then pcall(self.transport.poll, self.transport, 0) end
  if self.output then self.output:tick(now) end
  return r, st
end

return M
