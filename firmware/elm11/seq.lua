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

-- The next sequence number, or nil and the error when it cannot be saved: handing it out
-- unsaved could repeat it after a restart, and the server drops repeats.
function M:take()
  local v = self.next
  local ok, err = util.write_atomic(self.path, string.format("%d\n", v + 1))
  if not ok then return nil, err end
  self.next = v + 1
  return v
end

return M
