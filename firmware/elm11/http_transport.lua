-- HTTP transport (LuaSocket socket.http + ltn12).
--   upload(entries) : POST {server_url}/v1/sensors/batch, body = JSON array of the entries
--   get_output()    : GET  {server_url}/v1/oscillator/state?node_id=ID
-- upload() never raises; it returns a result table the node acts on:
--   {kind="accepted", removed=n, accepted=a, rejected={...}}   202 (rejected = bad data, dropped)
--   {kind="bad_batch", removed=n, status=s}                    other 4xx (400/413/422): not retryable
--   {kind="auth", status=401|403}                              keep buffered, back off
--   {kind="rate_limited", retry_after=s}                       429
--   {kind="retry", status=5xx | err="connection refused"}      keep buffered, retry later
local cjson = require("cjson")
local ltn12 = require("ltn12")
local M = {}
M.__index = M

function M.new(opts)
  local self = setmetatable({}, M)
  self.base = assert(opts.server_url, "http_transport: server_url required"):gsub("/+$", "")
  self.api_key = assert(opts.api_key, "http_transport: api_key required")
  self.node_id = opts.node_id
  self.timeout = opts.timeout or 10
  self.http = opts.http or require("socket.http")
  return self
end

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function M:request(method, path, body)
  local chunks = {}
  local headers = { ["X-API-Key"] = self.api_key, ["Accept"] = "application/json" }
  local src
  if body then
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = tostring(#body)
    src = ltn12.source.string(body)
  end
  self.http.TIMEOUT = self.timeout
  local ok, r1, code, resp_headers = pcall(self.http.request, {
    url = self.base .. path, method = method, headers = headers,
    source = src, sink = ltn12.sink.table(chunks),
  })
  if not ok then return nil, tostring(r1) end
  if r1 == nil then return nil, tostring(code) end -- code holds the error message
  return tonumber(code), table.concat(chunks), resp_headers or {}
end

local function parse_retry_after(v)
  local n = tonumber(v or "")
  if n and n >= 0 then return n end
  return 60 -- HTTP-date or missing: be conservative
end

function M:upload(entries)
  local body = "[" .. table.concat(entries, ",") .. "]"
  local code, resp, hdrs = self:request("POST", "/v1/sensors/batch", body)
  if not code then return { kind = "retry", err = resp } end
  if code == 202 or code == 200 or code == 201 then
    local ok, d = pcall(cjson.decode, resp)
    local res = { kind = "accepted", removed = #entries, status = code, accepted = #entries, rejected = {} }
    if ok and type(d) == "table" then
      if type(d.accepted) == "number" then res.accepted = d.accepted end
      -- The list is `rejections` (`rejected` is their count); older servers sent the list
      -- as `rejected`.
      if type(d.rejections) == "table" then res.rejected = d.rejections
      elseif type(d.rejected) == "table" then res.rejected = d.rejected end
    end
    return res
  elseif code == 401 or code == 403 then
    return { kind = "auth", status = code, body = resp }
  elseif code == 429 then
    return { kind = "rate_limited", status = code, retry_after = parse_retry_after(hdrs["retry-after"]) }
  elseif code >= 400 and code < 500 and code ~= 408 then
    return { kind = "bad_batch", removed = #entries, status = code, body = resp }
  end
  return { kind = "retry", status = code }
end

-- Returns the decoded state table, or nil, err.
function M:get_output()
  if not self.node_id then return nil, "no node_id" end
  local code, resp = self:request("GET", "/v1/oscillator/state?node_id=" .. urlencode(self.node_id))
  if not code then return nil, resp end
  if code ~= 200 then return nil, "HTTP " .. code end
  local ok, d = pcall(cjson.decode, resp)
  if not ok or type(d) ~= "table" then return nil, "bad state JSON" end
  return d
end

return M
