-- HAL interface used by the firmware (all hardware access goes through this table):
--   i2c_read(addr, reg, n) -> string of n bytes      (raise on bus error)
--   i2c_write(addr, reg, bytes)                       (bytes: string)
--   pwm_set(duty_0_255)
--   now()    -> UTC epoch seconds
--   sleep(s)
--   millis() -> monotonic milliseconds
--
-- !!! UNVERIFIED ADAPTER !!!
-- The ELM11 vendor Lua API could not be checked while writing this (no board, no vendor docs
-- available here). Every call below marked ASSUMPTION is a guess at the vendor's names and
-- must be checked on real hardware before use. The specs never load this file; they use
-- firmware/tests/elm11/fake_hal.lua.
local M = {}

function M.elm11(pwm_pin, pwm_freq)
  local hal = {}
  local i2c = rawget(_G, "i2c")      -- ASSUMPTION: a global `i2c` module exists
  local pwm = rawget(_G, "pwm")      -- ASSUMPTION: a global `pwm` module exists
  local tmr = rawget(_G, "tmr")      -- ASSUMPTION: a global `tmr` module exists
  if pwm and pwm.setup then pwm.setup(pwm_pin, pwm_freq, 0) end -- ASSUMPTION: setup(pin, freq, duty)

  function hal.i2c_read(addr, reg, n)
    -- ASSUMPTION: i2c.write(addr, string) then i2c.read(addr, n) -> string (repeated start not needed)
    i2c.write(addr, string.char(reg))
    local s = i2c.read(addr, n)
    if type(s) ~= "string" or #s ~= n then error(string.format("i2c read 0x%02X/0x%02X failed", addr, reg)) end
    return s
  end
  function hal.i2c_write(addr, reg, bytes)
    i2c.write(addr, string.char(reg) .. bytes) -- ASSUMPTION
  end
  function hal.pwm_set(d)
    pwm.duty(pwm_pin, d) -- ASSUMPTION: duty in 0..255
  end
  function hal.now()
    return os.time() -- ASSUMPTION: RTC/NTP-set clock and os.time() returns UTC epoch seconds
  end
  function hal.millis()
    if tmr and tmr.now then return tmr.now() / 1000 end -- ASSUMPTION: microseconds
    return os.clock() * 1000
  end
  function hal.sleep(s)
    if tmr and tmr.delay then tmr.delay(math.floor(s * 1e6)) return end -- ASSUMPTION: microseconds
    local t = hal.millis() + s * 1000
    while hal.millis() < t do end
  end
  return hal
end

return M
