-- Fake HAL for the specs: an I2C register map, a PWM recorder and a manual clock.
local M = {}

local function hex_to_bytes(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end
M.hex_to_bytes = hex_to_bytes

function M.new(opts)
  opts = opts or {}
  local hal = {
    regs = {},            -- regs[addr][reg] = byte
    writes = {},          -- {addr, reg, bytes}
    pwm = {},             -- history of duties
    t = opts.t or 1795000000, -- UTC epoch seconds (fake)
    ms = 0,
    measuring_polls = opts.measuring_polls or 2, -- status polls with bit 3 set after a forced trigger
    stuck_measuring = false,
    fail_i2c = false,
  }
  local busy = 0
  function hal.set(addr, reg, bytes)
    hal.regs[addr] = hal.regs[addr] or {}
    for i = 1, #bytes do hal.regs[addr][reg + i - 1] = bytes:byte(i) end
  end
  function hal.i2c_read(addr, reg, n)
    if hal.fail_i2c then error("i2c: NACK from 0x" .. string.format("%02X", addr)) end
    local map = hal.regs[addr]
    if not map then error(string.format("i2c: NACK from 0x%02X", addr)) end
    if reg == 0xF3 and n == 1 then
      if hal.stuck_measuring or busy > 0 then
        busy = busy - 1
        return string.char(8 + ((map[0xF3] or 0) % 8))
      end
    end
    local out = {}
    for i = 0, n - 1 do out[#out + 1] = string.char(map[reg + i] or 0) end
    return table.concat(out)
  end
  function hal.i2c_write(addr, reg, bytes)
    if hal.fail_i2c then error("i2c: NACK") end
    hal.writes[#hal.writes + 1] = { addr = addr, reg = reg, bytes = bytes }
    hal.set(addr, reg, bytes)
    if reg == 0xF4 and bytes:byte(1) % 4 == 1 then busy = hal.measuring_polls end
  end
  function hal.pwm_set(d) hal.pwm[#hal.pwm + 1] = d; hal.duty = d end
  function hal.now() return hal.t end
  function hal.millis() return hal.ms end
  function hal.sleep(s) hal.ms = hal.ms + s * 1000; hal.t = hal.t + s end
  function hal.advance(s) hal.t = hal.t + s; hal.ms = hal.ms + s * 1000 end
  return hal
end

-- A BME280 at addr with calibration/data from a vectors.json set/case.
function M.with_bme280(addr, set, case, opts)
  local hal = M.new(opts)
  hal.set(addr, 0xD0, string.char(0x60))
  hal.set(addr, 0x88, hex_to_bytes(set.calib_88_a1_hex))
  hal.set(addr, 0xE1, hex_to_bytes(set.calib_e1_e7_hex))
  if case then hal.set(addr, 0xF7, hex_to_bytes(case.data_hex)) end
  return hal
end

return M
