-- Bounded ring of encoded readings, persisted to a file (one JSON reading per line,
-- first line a header with the drop counter). Oldest entries are dropped when full.
-- Entries leave the ring only via :remove(n) after the server accepted them.
-- The whole file is rewritten atomically (tmp + rename) on every change: simple, and
-- a crash leaves either the old or the new state. Capacity ~1-2k entries is fine.
local util = require("util")
local M = {}
M.__index = M

function M.open(path, capacity)
  assert(type(capacity) == "number" and capacity >= 1, "buffer: capacity must be >= 1")
  local self = setmetatable({ path = path, capacity = capacity, items = {}, dropped = 0 }, M)
  local s = util.read_file(path)
  if s then
    local first = true
    for line in s:gmatch("[^\n]+") do
      if first and line:match("^#") then
        self.dropped = tonumber(line:match("dropped=(%d+)")) or 0
      elseif line:sub(1, 1) == "{" then
        self.items[#self.items + 1] = line
      end
      first = false
    end
    -- capacity may have shrunk in the config: keep the newest
    while #self.items > capacity do table.remove(self.items, 1); self.dropped = self.dropped + 1 end
  end
  return self
end

function M:save()
  local parts = { "# kaiabc buffer dropped=" .. string.format("%d", self.dropped) }
  for i = 1, #self.items do parts[#parts + 1] = self.items[i] end
  return util.write_atomic(self.path, table.concat(parts, "\n") .. "\n")
end

-- Add an encoded reading (a JSON string without newlines).
function M:push(entry)
  assert(type(entry) == "string" and not entry:find("\n"), "buffer: entry must be a one-line string")
  if #self.items >= self.capacity then
    table.remove(self.items, 1)
    self.dropped = self.dropped + 1
  end
  self.items[#self.items + 1] = entry
  return self:save()
end

function M:count() return #self.items end

-- Up to n oldest entries (copies), oldest first.
function M:peek(n)
  local out = {}
  for i = 1, math.min(n, #self.items) do out[i] = self.items[i] end
  return out
end

-- Remove the n oldest entries (after the server accepted/rejected them).
function M:remove(n)
  if n <= 0 then return true end
  local keep = {}
  for i = n + 1, #self.items do keep[#keep + 1] = self.items[i] end
  self.items = keep
  return self:save()
end

return M
