-- Shared spec setup: module paths and small utilities.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../../elm11/?.lua;" .. here .. "/?.lua;" .. package.path
local H = { dir = here }
function H.read_json(path)
  local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close()
  return require("cjson").decode(s)
end
function H.tmpdir()
  local p = os.tmpname(); os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end
function H.rel(a, b)
  if a == b then return 0 end
  return math.abs(a - b) / math.max(math.abs(b), 1e-300)
end
return H
