-- Minimal MQTT 3.1.1 client over LuaSocket TCP (QoS 0/1 publish, subscribe, keepalive, will),
-- optionally over TLS (opts.tls = { cafile = PEM path }, LuaSec; see mqtt_tls.lua).
-- Errors are returned as nil, err (never raised) for network / broker refusals.
local socket = require("socket")
local floor = math.floor
local M = {}
M.__index = M

local CONNACK_ERR = { "unacceptable protocol version", "identifier rejected", "server unavailable",
  "bad user name or password", "not authorised" }

-- Remaining-length varint
function M.encode_varint(n)
  local out = {}
  repeat
    local d = n % 128
    n = floor(n / 128)
    if n > 0 then d = d + 128 end
    out[#out + 1] = string.char(d)
  until n == 0
  return table.concat(out)
end
-- Decode from string s at position i; returns value, next index, or nil if incomplete.
function M.decode_varint(s, i)
  local mult, v = 1, 0
  for k = 0, 3 do
    local b = s:byte(i + k)
    if not b then return nil end
    v = v + (b % 128) * mult
    if b < 128 then return v, i + k + 1 end
    mult = mult * 128
  end
  error("mqtt: malformed remaining length")
end

local function u16(n) return string.char(floor(n / 256) % 256, n % 256) end
local function str(s) return u16(#s) .. s end
local function packet(first, body) return string.char(first) .. M.encode_varint(#body) .. body end

function M.new(opts)
  local self = setmetatable({}, M)
  self.host, self.port = opts.host or "127.0.0.1", opts.port or 1883
  self.client_id = opts.client_id or ""
  self.username, self.password = opts.username, opts.password
  self.keepalive = opts.keepalive or 60
  self.will = opts.will -- {topic, payload, qos, retain}
  self.timeout = opts.timeout or 5
  self.tls = opts.tls   -- { cafile = ..., server_name = (default host) } or nil for plain TCP
  self.rbuf = ""
  self.queue = {}       -- received PUBLISHes not yet returned by poll()
  self.next_pid = 1
  return self
end

-- "No data (yet)" from a socket: LuaSocket says "timeout", LuaSec "wantread"/"wantwrite"
-- (a TLS record is incomplete, or the handshake layer waits). Every other error means the link
-- is gone: "closed", an errno text, or an OpenSSL reason such as "unexpected eof while
-- reading" when the peer vanished without close_notify (a server that exits, a killed broker).
-- A LuaSec connection must not be read or written again after such an error: with LuaSec 1.2 /
-- OpenSSL 3 the next receive or send never returns (LuaSocket's buffer loop calls LuaSec's recv
-- over and over, at full CPU, no syscall). So any such error drops the connection at once
-- (_lost closes it, which is safe), and the caller reconnects later.
local AGAIN = { timeout = true, wantread = true, wantwrite = true }
M.AGAIN = AGAIN

function M:_send(data)
  if not self.sock then return nil, self.lost or "not connected" end
  self.sock:settimeout(self.timeout)
  local i = 1
  while i <= #data do
    local n, err, part = self.sock:send(data, i)
    if n then
      i = n + 1
    elseif AGAIN[err] and part and part >= i then
      i = part + 1 -- some bytes went out before the timeout: keep going
    else
      -- No progress within self.timeout, or the link failed: a packet half sent leaves the
      -- stream unusable, so the connection goes either way.
      if AGAIN[err] then err = "timeout" end
      self:_lost(err)
      return nil, err
    end
  end
  self.last_tx = socket.gettime()
  return true
end

function M:_lost(err)
  if self.sock then self.sock:close() end
  self.sock = nil
  self.lost = err
end

-- Read one packet within `timeout` seconds: returns type, flags, body | nil, "timeout" | nil, err
-- (the connection is then dropped). Waits in select, never spins: it reads on while the socket
-- gives data, and once a poll brought none, stops at the deadline (timeout 0: one empty poll).
function M:_read(timeout)
  local deadline = socket.gettime() + (timeout or 0)
  local got = true
  while true do
    if #self.rbuf >= 2 then
      local len, pos = M.decode_varint(self.rbuf, 2)
      if len and #self.rbuf >= pos - 1 + len then
        local b = self.rbuf:byte(1)
        local body = self.rbuf:sub(pos, pos + len - 1)
        self.rbuf = self.rbuf:sub(pos + len)
        return floor(b / 16), b % 16, body
      end
    end
    if not self.sock then return nil, self.lost or "not connected" end
    local left = deadline - socket.gettime()
    if not got and left <= 0 then return nil, "timeout" end
    got = false
    local r = socket.select({ self.sock }, nil, left > 0 and left or 0)
    if #r > 0 then
      self.sock:settimeout(0)
      local data, err, part = self.sock:receive(65536)
      data = data or part
      if data and #data > 0 then self.rbuf = self.rbuf .. data; got = true end
      -- Data that came with the error is kept: a complete packet in it is still returned.
      if err and not AGAIN[err] then self:_lost(err) end
    end
  end
end

local function parse_publish(flags, body)
  local tlen = body:byte(1) * 256 + body:byte(2)
  local topic = body:sub(3, 2 + tlen)
  local qos = floor(flags / 2) % 4
  local pos, pid = 3 + tlen, nil
  if qos > 0 then pid = body:byte(pos) * 256 + body:byte(pos + 1); pos = pos + 2 end
  return { topic = topic, payload = body:sub(pos), qos = qos, retain = flags % 2 == 1,
           dup = floor(flags / 8) % 2 == 1, pid = pid }
end

-- Handle a packet that is not the one being waited for.
function M:_dispatch(ptype, flags, body)
  if ptype == 3 then
    local msg = parse_publish(flags, body)
    if msg.qos == 1 then self:_send(packet(0x40, u16(msg.pid))) end
    self.queue[#self.queue + 1] = msg
  end
  -- PINGRESP / stray acks: ignored
end

-- Wait for a packet of type `want` (and packet id `pid` if given).
function M:_wait(want, pid, timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  while true do
    local left = deadline - socket.gettime()
    if left <= 0 then return nil, "timeout" end
    local t, f, body = self:_read(left)
    if not t then return nil, f end
    if t == want and (not pid or (body:byte(1) * 256 + body:byte(2)) == pid) then return body end
    self:_dispatch(t, f, body)
  end
end

function M:_pid()
  local p = self.next_pid
  self.next_pid = p % 65535 + 1
  return p
end

function M:connect()
  local tls
  if self.tls then
    -- Without LuaSec there is no TLS: refuse before a byte leaves, never send in plain.
    tls = require("mqtt_tls")
    local ssl, lerr = tls.luasec()
    if not ssl then return nil, lerr end
  end
  local sock = socket.tcp()
  sock:settimeout(self.timeout)
  local ok, err = sock:connect(self.host, self.port)
  if not ok then sock:close(); return nil, "connect: " .. tostring(err) end
  sock:setoption("tcp-nodelay", true)
  if tls then
    local conn, terr = tls.wrap(sock, self.tls.server_name or self.host, self.tls.cafile, self.timeout)
    if not conn then return nil, terr end
    sock = conn
  end
  self.sock, self.rbuf, self.lost = sock, "", nil
  local flags = 2 -- clean session
  local payload = str(self.client_id)
  if self.will then
    flags = flags + 4 + (self.will.qos or 0) * 8 + (self.will.retain and 32 or 0)
    payload = payload .. str(self.will.topic) .. str(self.will.payload)
  end
  if self.username then flags = flags + 128; payload = payload .. str(self.username) end
  if self.password then flags = flags + 64; payload = payload .. str(self.password) end
  local body = str("MQTT") .. string.char(4, flags) .. u16(self.keepalive) .. payload
  ok, err = self:_send(packet(0x10, body))
  if not ok then return nil, err end
  local ack, rerr = self:_wait(2, nil, self.timeout)
  if not ack then self:_lost(rerr); return nil, "connack: " .. tostring(rerr) end
  local rc = ack:byte(2)
  if rc ~= 0 then
    self:_lost("refused")
    return nil, "connection refused: " .. (CONNACK_ERR[rc] or ("code " .. rc)), rc
  end
  return true
end

-- QoS 0: returns true. QoS 1: waits for PUBACK with the packet id (timeout -> nil, "timeout").
function M:publish(topic, payload, qos, retain)
  qos = qos or 0
  local first = 0x30 + qos * 2 + (retain and 1 or 0)
  local body = str(topic)
  local pid
  if qos > 0 then pid = self:_pid(); body = body .. u16(pid) end
  local ok, err = self:_send(packet(first, body .. payload))
  if not ok then return nil, err end
  if qos == 0 then return true end
  local ack, aerr = self:_wait(4, pid, self.timeout)
  if not ack then return nil, "puback: " .. tostring(aerr) end
  return true
end

-- Returns granted QoS, or nil, err (0x80 = refused).
function M:subscribe(topic, qos)
  local pid = self:_pid()
  local ok, err = self:_send(packet(0x82, u16(pid) .. str(topic) .. string.char(qos or 0)))
  if not ok then return nil, err end
  local ack, aerr = self:_wait(9, pid, self.timeout)
  if not ack then return nil, "suback: " .. tostring(aerr) end
  local rc = ack:byte(3)
  if rc == 0x80 then return nil, "subscription refused" end
  return rc
end

-- Next received PUBLISH within `timeout` seconds (0 = non-blocking), or nil, "timeout"/err.
function M:poll(timeout)
  if #self.queue > 0 then return table.remove(self.queue, 1) end
  local deadline = socket.gettime() + (timeout or 0)
  repeat
    local t, f, body = self:_read(math.max(0, deadline - socket.gettime()))
    if not t then return nil, f end
    self:_dispatch(t, f, body)
    if #self.queue > 0 then return table.remove(self.queue, 1) end
  until socket.gettime() >= deadline
  return nil, "timeout"
end

function M:ping(timeout)
  local ok, err = self:_send(string.char(0xC0, 0))
  if not ok then return nil, err end
  local r, rerr = self:_wait(13, nil, timeout or self.timeout)
  if not r then
    self:_lost(rerr) -- no PINGRESP in time: the link is dead (MQTT 3.1.1, 3.1.2.10)
    return nil, "pingresp: " .. tostring(rerr)
  end
  return true
end

-- Send PINGREQ if nothing was sent for 3/4 of the keepalive.
function M:keepalive_tick()
  if self.sock and socket.gettime() - (self.last_tx or 0) >= self.keepalive * 0.75 then return self:ping() end
  return true
end

function M:disconnect()
  if self.sock then self:_send(string.char(0xE0, 0)); self:_lost("disconnected") end
end

function M:connected() return self.sock ~= nil end

return M
