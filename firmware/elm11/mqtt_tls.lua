-- TLS for the MQTT client (config "mqtt_tls": true): wraps a connected LuaSocket TCP socket with
-- LuaSec, verifies the broker's certificate chain against the CA in "mqtt_ca_file" (OpenSSL)
-- and the broker's name against mqtt_host (LuaSec checks no names itself). Every failure is an
-- error value; there is no fallback to plain MQTT.
local M = {}

M.NO_LUASEC = 'mqtt_tls is true but LuaSec (require "ssl") is not available on this board: '
  .. 'install LuaSec, or set mqtt_tls to false to use plain MQTT on purpose'

-- LuaSec's ssl module, or nil and why not.
function M.luasec()
  local ok, ssl = pcall(require, "ssl")
  if not ok or type(ssl) ~= "table" or type(ssl.wrap) ~= "function" then
    return nil, M.NO_LUASEC .. (ok and "" or (" (" .. tostring(ssl):match("^[^\n]*") .. ")"))
  end
  return ssl
end

-- TLS 1.2 or newer: protocol "any" negotiates the highest both sides have (TLS 1.3 with a
-- current Mosquitto); the no_* options rule out the older ones where this LuaSec knows them.
function M.params(cafile)
  local known
  -- ssl.config only after ssl: loaded first, LuaSec 1.2's ssl.config crashes the interpreter.
  if M.luasec() then
    local ok, cfg = pcall(require, "ssl.config")
    if ok and type(cfg) == "table" and type(cfg.options) == "table" then known = cfg.options end
  end
  local options = {}
  for _, o in ipairs({ "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" }) do
    if o == "all" or (known and known[o] ~= nil) then options[#options + 1] = o end
  end
  return { mode = "client", protocol = "any", cafile = cafile,
           verify = { "peer", "fail_if_no_peer_cert" }, options = options }
end

-- An IPv4 or IPv6 address (not a DNS name)?
function M.is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

-- Does a certificate name (dNSName or CN, maybe "*.example.org") cover host?
local function name_matches(pattern, host)
  pattern = pattern:lower():gsub("%.$", "")
  if pattern == host then return true end
  local rest = pattern:match("^%*(%..+%..+)$") -- a wildcard only as the whole left-most label
  if not rest then return false end
  local label, hrest = host:match("^([^.]+)(%..+)$")
  return label ~= nil and hrest == rest
end

-- names = { dns = {...}, ip = {...}, cn = {...} } from the certificate. True when host is
-- one of them: an IP address against the iPAddress entries, a name against the dNSName
-- entries, and against the subject's CN only when the certificate has no subjectAltName.
function M.host_matches(names, host)
  host = host:lower():gsub("%.$", "")
  local has_san = #names.dns > 0 or #names.ip > 0
  if M.is_ip(host) then
    for _, ip in ipairs(names.ip) do if ip:lower() == host then return true end end
    return false
  end
  for _, n in ipairs(names.dns) do if name_matches(n, host) then return true end end
  if not has_san then
    for _, n in ipairs(names.cn) do if name_matches(n, host) then return true end end
  end
  return false
end

local function list(v)
  if type(v) == "string" then return { v } end
  return type(v) == "table" and v or {}
end

-- The names a LuaSec certificate object carries.
function M.names(cert)
  if type(cert) ~= "userdata" and type(cert) ~= "table" then return nil, "the broker sent no certificate" end
  if not cert.extensions then return nil, "this LuaSec cannot read certificate extensions" end
  local ext = cert:extensions() or {}
  local san = ext["2.5.29.17"] or {}
  local names = { dns = list(san.dNSName), ip = list(san.iPAddress), cn = {} }
  for _, e in ipairs(cert.subject and cert:subject() or {}) do
    if e.oid == "2.5.4.3" or e.name == "CN" or e.name == "commonName" then
      names.cn[#names.cn + 1] = e.value
    end
  end
  return names
end

-- sock: a connected LuaSocket TCP socket (closed here on any failure). Returns the LuaSec
-- connection after the handshake and the name check, or nil, err.
function M.wrap(sock, host, cafile, timeout)
  local ssl, lerr = M.luasec()
  if not ssl then sock:close(); return nil, lerr end
  local conn, werr = ssl.wrap(sock, M.params(cafile))
  if not conn then sock:close(); return nil, "tls: " .. tostring(werr) end
  -- SNI, where this LuaSec has it, for a name only: RFC 6066 allows no IP address there
  -- (rustls rejects it as "Illegal SNI extension"). The name check below covers both.
  if conn.sni and not M.is_ip(host) then conn:sni(host) end
  conn:settimeout(timeout)
  local ok, herr = conn:dohandshake()
  if not ok then
    conn:close()
    return nil, "tls handshake with " .. host .. " failed: " .. tostring(herr)
  end
  local names, nerr = M.names(conn:getpeercertificate())
  if not names then conn:close(); return nil, "tls: " .. nerr end
  if not M.host_matches(names, host) then
    conn:close()
    local all = {}
    for _, k in ipairs({ "ip", "dns" }) do for _, n in ipairs(names[k]) do all[#all + 1] = n end end
    return nil, ("tls: the broker's certificate is not for %s (it names %s)"):format(host,
      #all > 0 and table.concat(all, ", ") or table.concat(names.cn, ", "))
  end
  return conn
end

return M
