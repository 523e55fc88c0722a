-- Tiny programmable HTTP server for the specs (LuaSocket). Run as a separate process:
--   lua http_server.lua DIR
-- Writes DIR/port once listening. For each request it reads DIR/program (a JSON object:
-- {"status": 202, "retry_after": "5", "reject_seq": [3], "state": {...}}), appends a JSON
-- line to DIR/requests.log ({method, path, api_key, content_type, body}) and answers.
local socket = require("socket")
local cjson = require("cjson")
local dir = assert(arg[1])
local function slurp(p) local f = io.open(p, "rb"); if not f then return nil end; local s = f:read("*a"); f:close(); return s end
local srv = assert(socket.bind("127.0.0.1", tonumber(arg[2] or 0) or 0))
local _, port = srv:getsockname()
local f = io.open(dir .. "/port.tmp", "w"); f:write(tostring(port)); f:close()
os.rename(dir .. "/port.tmp", dir .. "/port")
while true do
  local c = srv:accept()
  if c then
    c:settimeout(5)
    local line = c:receive("*l")
    local headers = {}
    while true do
      local h = c:receive("*l")
      if not h or h == "" then break end
      local k, v = h:match("^([^:]+):%s*(.*)$")
      if k then headers[k:lower()] = v end
    end
    local body = ""
    local n = tonumber(headers["content-length"] or "0")
    if n and n > 0 then body = c:receive(n) or "" end
    local method, path = (line or ""):match("^(%S+)%s+(%S+)")
    local prog = cjson.decode(slurp(dir .. "/program") or '{"status":202}')
    local lf = io.open(dir .. "/requests.log", "a")
    lf:write(cjson.encode({ method = method or "", path = path or "", api_key = headers["x-api-key"] or "",
      content_type = headers["content-type"] or "", body = body, status = prog.status }) .. "\n")
    lf:close()
    local status, rbody, extra = prog.status or 202, "", ""
    if method == "GET" then
      status = prog.get_status or 200
      rbody = cjson.encode(prog.state or {})
    elseif status == 202 then
      local arr = cjson.decode(body)
      local rejected, rs = {}, {}
      for _, s in ipairs(prog.reject_seq or {}) do rs[s] = true end
      for i, r in ipairs(arr) do
        if rs[r.seq] then rejected[#rejected + 1] = { index = i - 1, code = "OUT_OF_RANGE", message = "test reject" } end
      end
      rbody = cjson.encode({ accepted = #arr - #rejected, rejected = #rejected, rejections = rejected })
      if #rejected == 0 then rbody = rbody:gsub('"rejections":{}', '"rejections":[]') end
    else
      rbody = '{"error":"programmed"}'
    end
    if prog.retry_after then extra = "Retry-After: " .. prog.retry_after .. "\r\n" end
    c:send(("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s")
      :format(status, #rbody, extra, rbody))
    c:close()
  end
end
