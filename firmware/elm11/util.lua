-- Small file helpers (atomic replace via rename).
local M = {}
-- The file's bytes; when it is missing, those of `path.tmp`, which write_atomic finished
-- before the old file went (a crash between the two leaves only the new one).
function M.read_file(path)
  local f = io.open(path, "rb") or io.open(path .. ".tmp", "rb")
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
  -- Renaming over the old file is atomic where the file system allows it (POSIX). Where it
  -- refuses, the old file goes first; read_file then finds the whole new one in `tmp`.
  if os.rename(tmp, path) then return true end
  os.remove(path)
  return os.rename(tmp, path)
end
function M.round(x, n)
  local m = 10 ^ (n or 0)
  return math.floor(x * m + 0.5) / m
end
return M
