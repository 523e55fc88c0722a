-- Small file helpers (atomic replace via rename).
local M = {}
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a"); f:close()
  return s
end
function M.write_atomic(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  if not ok then f:close(); return nil, werr end
  f:close()
  os.remove(path) -- rename over an existing file is not atomic on every FS; fine on Linux, needed elsewhere
  return os.rename(tmp, path)
end
function M.round(x, n)
  local m = 10 ^ (n or 0)
  return math.floor(x * m + 0.5) / m
end
return M
