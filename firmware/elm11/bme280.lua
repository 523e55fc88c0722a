-- BME280 driver (temperature / pressure / humidity) for the ELM11 node.
-- Pure Lua, runs on Lua 5.1 and 5.3: no integer division operator and no
-- bitwise operators; all bit work is done with math.floor and %.
-- Compensation: Bosch BME280 datasheet section 8.1, double-precision formulas.
local M = {}

M.CHIP_ID = 0x60
M.REG_CALIB00 = 0x88   -- 0x88..0xA1, 26 bytes
M.REG_CALIB26 = 0xE1   -- 0xE1..0xE7, 7 bytes
M.REG_CHIP_ID = 0xD0
M.REG_CTRL_HUM = 0xF2
M.REG_STATUS = 0xF3
M.REG_CTRL_MEAS = 0xF4
M.REG_CONFIG = 0xF5
M.REG_DATA = 0xF7      -- 0xF7..0xFE, 8 bytes

local floor = math.floor

local function u8(s, i) return s:byte(i) end
local function s8(s, i)
  local v = s:byte(i)
  if v >= 128 then v = v - 256 end
  return v
end
local function u16le(s, i) return s:byte(i) + 256 * s:byte(i + 1) end
local function s16le(s, i)
  local v = u16le(s, i)
  if v >= 32768 then v = v - 65536 end
  return v
end

-- Parse the two calibration blocks (strings of 26 and 7 bytes).
function M.parse_calibration(b88, be1)
  assert(type(b88) == "string" and #b88 == 26, "bme280: calibration block 0x88..0xA1 must be 26 bytes")
  assert(type(be1) == "string" and #be1 == 7, "bme280: calibration block 0xE1..0xE7 must be 7 bytes")
  local c = {}
  c.T1 = u16le(b88, 1)
  c.T2 = s16le(b88, 3)
  c.T3 = s16le(b88, 5)
  c.P1 = u16le(b88, 7)
  c.P2 = s16le(b88, 9)
  c.P3 = s16le(b88, 11)
  c.P4 = s16le(b88, 13)
  c.P5 = s16le(b88, 15)
  c.P6 = s16le(b88, 17)
  c.P7 = s16le(b88, 19)
  c.P8 = s16le(b88, 21)
  c.P9 = s16le(b88, 23)
  -- byte 25 (0xA0) unused
  c.H1 = u8(b88, 26)
  c.H2 = s16le(be1, 1)
  c.H3 = u8(be1, 3)
  local e5 = u8(be1, 5)
  c.H4 = s8(be1, 4) * 16 + (e5 % 16)
  c.H5 = s8(be1, 6) * 16 + floor(e5 / 16)
  c.H6 = s8(be1, 7)
  return c
end

-- Parse the 8-byte burst read from 0xF7: returns adc_p, adc_t, adc_h.
function M.parse_raw(d)
  assert(type(d) == "string" and #d == 8, "bme280: data block 0xF7..0xFE must be 8 bytes")
  local b1, b2, b3, b4, b5, b6, b7, b8 = d:byte(1, 8)
  local adc_p = b1 * 4096 + b2 * 16 + floor(b3 / 16)
  local adc_t = b4 * 4096 + b5 * 16 + floor(b6 / 16)
  local adc_h = b7 * 256 + b8
  return adc_p, adc_t, adc_h
end

-- Returns temperature (degC) and t_fine.
function M.compensate_t(c, adc_t)
  local var1 = (adc_t / 16384.0 - c.T1 / 1024.0) * c.T2
  local d = adc_t / 131072.0 - c.T1 / 8192.0
  local var2 = (d * d) * c.T3
  local t_fine = var1 + var2
  return t_fine / 5120.0, t_fine
end

-- Pressure in Pa.
function M.compensate_p(c, adc_p, t_fine)
  local var1 = t_fine / 2.0 - 64000.0
  local var2 = var1 * var1 * c.P6 / 32768.0
  var2 = var2 + var1 * c.P5 * 2.0
  var2 = var2 / 4.0 + c.P4 * 65536.0
  var1 = (c.P3 * var1 * var1 / 524288.0 + c.P2 * var1) / 524288.0
  var1 = (1.0 + var1 / 32768.0) * c.P1
  if var1 == 0 then return 0 end -- avoid division by zero
  local p = 1048576.0 - adc_p
  p = (p - var2 / 4096.0) * 6250.0 / var1
  var1 = c.P9 * p * p / 2147483648.0
  var2 = p * c.P8 / 32768.0
  return p + (var1 + var2 + c.P7) / 16.0
end

-- Relative humidity in %, clamped to 0..100.
function M.compensate_h(c, adc_h, t_fine)
  local h = t_fine - 76800.0
  h = (adc_h - (c.H4 * 64.0 + c.H5 / 16384.0 * h)) *
      (c.H2 / 65536.0 * (1.0 + c.H6 / 67108864.0 * h * (1.0 + c.H3 / 67108864.0 * h)))
  h = h * (1.0 - c.H1 * h / 524288.0)
  if h > 100.0 then h = 100.0 elseif h < 0.0 then h = 0.0 end
  return h
end

function M.compensate(c, adc_p, adc_t, adc_h)
  local t, t_fine = M.compensate_t(c, adc_t)
  return t, M.compensate_p(c, adc_p, t_fine), M.compensate_h(c, adc_h, t_fine)
end

-- Register encodings.
local OSRS = { [0] = 0, [1] = 1, [2] = 2, [4] = 3, [8] = 4, [16] = 5 }
local FILTER = { [0] = 0, [2] = 1, [4] = 2, [8] = 3, [16] = 4 }
local STANDBY = { [0.5] = 0, [62.5] = 1, [125] = 2, [250] = 3, [500] = 4, [1000] = 5, [10] = 6, [20] = 7 }
local MODE = { sleep = 0, forced = 1, normal = 3 }
M.OSRS, M.FILTER, M.STANDBY, M.MODE = OSRS, FILTER, STANDBY, MODE

local function code(tbl, v, what)
  local c = tbl[v]
  if c == nil then error("bme280: unsupported " .. what .. " value " .. tostring(v), 3) end
  return c
end

-- Register bytes for a settings table {mode, osrs_t, osrs_p, osrs_h, filter, standby_ms}.
function M.register_values(s)
  local mode = code(MODE, s.mode or "forced", "mode")
  local ot = code(OSRS, s.osrs_t or 1, "osrs_t")
  local op = code(OSRS, s.osrs_p or 1, "osrs_p")
  local oh = code(OSRS, s.osrs_h or 1, "osrs_h")
  local f = code(FILTER, s.filter or 0, "filter")
  local sb = code(STANDBY, s.standby_ms or 1000, "standby_ms")
  return {
    ctrl_hum = oh,
    ctrl_meas_base = ot * 32 + op * 4, -- mode bits (1..0) added by caller
    mode = mode,
    config = sb * 32 + f * 4,
  }
end

local Dev = {}
Dev.__index = Dev

-- Open the sensor: check chip id, read calibration, write configuration.
-- opts: {address=0x76, mode=..., osrs_*, filter, standby_ms, timeout_s=0.5}
function M.new(hal, opts)
  opts = opts or {}
  local self = setmetatable({ hal = hal, addr = opts.address or 0x76, opts = opts }, Dev)
  self.timeout_s = opts.timeout_s or 0.5
  local id = hal.i2c_read(self.addr, M.REG_CHIP_ID, 1)
  if type(id) ~= "string" or #id ~= 1 then
    error(string.format("bme280: no answer from I2C address 0x%02X (chip id read failed)", self.addr), 2)
  end
  if id:byte(1) ~= M.CHIP_ID then
    error(string.format("bme280: chip id at 0x%02X is 0x%02X, expected 0x60 (BME280); " ..
      "0x58 would be a BMP280 (no humidity)", self.addr, id:byte(1)), 2)
  end
  self.calib = M.parse_calibration(hal.i2c_read(self.addr, M.REG_CALIB00, 26),
                                   hal.i2c_read(self.addr, M.REG_CALIB26, 7))
  self.regs = M.register_values(opts)
  -- ctrl_hum only takes effect after a write to ctrl_meas, so write it first.
  hal.i2c_write(self.addr, M.REG_CTRL_HUM, string.char(self.regs.ctrl_hum))
  -- ctrl_meas in sleep mode first, so config (0xF5) is written while asleep
  -- (the datasheet says writes to config in normal mode may be ignored).
  hal.i2c_write(self.addr, M.REG_CTRL_MEAS, string.char(self.regs.ctrl_meas_base))
  hal.i2c_write(self.addr, M.REG_CONFIG, string.char(self.regs.config))
  if self.regs.mode == MODE.normal then
    hal.i2c_write(self.addr, M.REG_CTRL_MEAS, string.char(self.regs.ctrl_meas_base + MODE.normal))
  end
  return self
end

-- Wait while status bit 3 (measuring) is set. Returns true, or nil, err on timeout.
function Dev:wait_ready()
  local hal = self.hal
  local start = hal.millis()
  while true do
    local st = hal.i2c_read(self.addr, M.REG_STATUS, 1)
    if type(st) ~= "string" or #st ~= 1 then return nil, "bme280: status read failed" end
    if floor(st:byte(1) / 8) % 2 == 0 then return true end
    if hal.millis() - start >= self.timeout_s * 1000 then
      return nil, "bme280: measurement timeout (status 0xF3 bit 3 still set)"
    end
    hal.sleep(0.002)
  end
end

-- One measurement. Returns {temperature_c, pressure_pa, humidity_percent, adc_*}
-- or nil, err. Never raises for bus errors.
function Dev:read()
  local ok, res, err = pcall(function()
    if self.regs.mode ~= MODE.normal then
      self.hal.i2c_write(self.addr, M.REG_CTRL_MEAS, string.char(self.regs.ctrl_meas_base + MODE.forced))
      local ready, e = self:wait_ready()
      if not ready then return nil, e end
    end
    local d = self.hal.i2c_read(self.addr, M.REG_DATA, 8)
    if type(d) ~= "string" or #d ~= 8 then return nil, "bme280: data read failed" end
    local ap, at, ah = M.parse_raw(d)
    if ap == 0x80000 or at == 0x80000 then
      return nil, "bme280: measurement skipped (0x80000 in data registers)"
    end
    local t, p, h = M.compensate(self.calib, ap, at, ah)
    return { temperature_c = t, pressure_pa = p, humidity_percent = h,
             adc_p = ap, adc_t = at, adc_h = ah }
  end)
  if not ok then return nil, "bme280: " .. tostring(res) end
  return res, err
end

return M
