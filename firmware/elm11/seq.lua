-- Persistent reading sequence number. The next value is saved before it is
-- handed out, so a restart never reuses a sequence number.
local util = require("util")
local M = {}
M.__index = M

function M.open(path)
  local self = setmetatable({ path = path, next = 1 }, M)
  local s = util.read_file(path)
  local n = s and tonumber(s:match("^%s*(%d+)"))
  if n then self.next = n end
  return self
end

function M:take()
  local v = self.next
  self.next = v + 1
  local ok, err = util.write_atomic(self.path, string.format("%d\n", self.next))
  if not ok then return v, err end
  return v
end

return M
