local H = require("helper") -- luacheck: ignore
local bme = require("bme280")
local fake = require("fake_hal")
local V = H.read_json(H.dir .. "/../reference/vectors.json")

local worst = { t = 0, p = 0, h = 0 }

describe("bme280 calibration parsing", function()
  for si, set in ipairs(V.sets) do
    it("set " .. (si - 1) .. " parses exactly like the reference", function()
      local c = bme.parse_calibration(fake.hex_to_bytes(set.calib_88_a1_hex),
                                      fake.hex_to_bytes(set.calib_e1_e7_hex))
      local n = 0
      for k, v in pairs(set.calibration) do
        assert.are.equal(v, c[k], "calibration " .. k); n = n + 1
      end
      assert.are.equal(18, n)
    end)
  end
  it("handles negative H4/H5 (signed 0xE4/0xE6) and the shared nibble 0xE5", function()
    local b88 = string.rep("\0", 26)
    local be1 = string.char(0x00, 0x00, 0x00, 0xFF, 0xA7, 0x80, 0xFE)
    local c = bme.parse_calibration(b88, be1)
    assert.are.equal(-1 * 16 + 7, c.H4)
    assert.are.equal(-128 * 16 + 10, c.H5)
    assert.are.equal(-2, c.H6)
  end)
  it("rejects wrong block lengths", function()
    assert.has_error(function() bme.parse_calibration("abc", string.rep("\0", 7)) end)
  end)
end)

describe("bme280 raw data parsing", function()
  it("unpacks 20-bit P/T and 16-bit H from the burst read", function()
    for _, set in ipairs(V.sets) do
      for _, case in ipairs(set.cases) do
        local p, t, h = bme.parse_raw(fake.hex_to_bytes(case.data_hex))
        assert.are.equal(case.adc_p, p); assert.are.equal(case.adc_t, t); assert.are.equal(case.adc_h, h)
      end
    end
  end)
end)

describe("bme280 driver through the fake I2C bus", function()
  it("BMP280 datasheet worked example (set 0 case 0): 25.08 degC, 100653.27 Pa", function()
    local set = V.sets[1]; local case = set.cases[1]
    local hal = fake.with_bme280(0x76, set, case)
    local dev = bme.new(hal, { address = 0x76, mode = "forced", osrs_t = 1, osrs_p = 1, osrs_h = 1 })
    local r = assert(dev:read())
    assert.are.equal(25.08, math.floor(r.temperature_c * 100 + 0.5) / 100)
    assert.are.equal(100653.27, math.floor(r.pressure_pa * 100 + 0.5) / 100)
    assert.is_true(H.rel(r.temperature_c, case.temperature_c) < 1e-6)
  end)

  for si, set in ipairs(V.sets) do
    it("set " .. (si - 1) .. ": every case matches the double-precision reference to 1e-6 relative", function()
      for ci, case in ipairs(set.cases) do
        local hal = fake.with_bme280(0x77, set, case)
        local dev = bme.new(hal, { address = 0x77 })
        local r = assert(dev:read())
        local dt = H.rel(r.temperature_c, case.temperature_c)
        local dp = H.rel(r.pressure_pa, case.pressure_pa)
        local dh = math.abs(r.humidity_percent - case.humidity_percent) /
                   math.max(math.abs(case.humidity_percent), 1e-9)
        if case.humidity_percent == 0 then dh = math.abs(r.humidity_percent) end
        worst.t = math.max(worst.t, dt); worst.p = math.max(worst.p, dp); worst.h = math.max(worst.h, dh)
        assert.is_true(dt < 1e-6, ("set %d case %d T %.17g vs %.17g"):format(si - 1, ci - 1, r.temperature_c, case.temperature_c))
        assert.is_true(dp < 1e-6, ("set %d case %d P %.17g vs %.17g"):format(si - 1, ci - 1, r.pressure_pa, case.pressure_pa))
        assert.is_true(dh < 1e-6, ("set %d case %d H %.17g vs %.17g"):format(si - 1, ci - 1, r.humidity_percent, case.humidity_percent))
        assert.is_true(r.humidity_percent >= 0 and r.humidity_percent <= 100)
      end
    end)
  end

  it("reports the worst relative differences", function()
    local f = io.open(os.getenv("BME280_WORST_FILE") or "/dev/null", "a")
    if f then f:write(("%s T=%.3g P=%.3g H=%.3g\n"):format(_VERSION, worst.t, worst.p, worst.h)); f:close() end
    assert.is_true(worst.t < 1e-6 and worst.p < 1e-6 and worst.h < 1e-6)
  end)

  it("rejects a wrong chip id with a clear message", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    hal.set(0x76, 0xD0, string.char(0x58))
    local ok, err = pcall(bme.new, hal, { address = 0x76 })
    assert.is_false(ok)
    assert.matches("chip id at 0x76 is 0x58, expected 0x60", err, 1, true)
  end)

  it("writes ctrl_hum, then ctrl_meas, then config with the configured fields", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    bme.new(hal, { address = 0x76, mode = "forced", osrs_t = 2, osrs_p = 16, osrs_h = 4, filter = 4, standby_ms = 250 })
    local w = hal.writes
    assert.are.same({ 0xF2, 0xF4, 0xF5 }, { w[1].reg, w[2].reg, w[3].reg })
    assert.are.equal(3, w[1].bytes:byte(1))                  -- osrs_h x4
    assert.are.equal(2 * 32 + 5 * 4 + 0, w[2].bytes:byte(1))  -- osrs_t x2, osrs_p x16, sleep
    assert.are.equal(3 * 32 + 2 * 4, w[3].bytes:byte(1))      -- t_sb 250 ms, filter 4
  end)

  it("normal mode ends with ctrl_meas mode bits 11 and reads without triggering", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    local dev = bme.new(hal, { address = 0x76, mode = "normal" })
    assert.are.equal(3, hal.regs[0x76][0xF4] % 4)
    local nw = #hal.writes
    assert(dev:read())
    assert.are.equal(nw, #hal.writes)
  end)

  it("forced mode triggers a measurement and waits for status bit 3 to clear", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1], { measuring_polls = 3 })
    local dev = bme.new(hal, { address = 0x76 })
    local ms0 = hal.ms
    assert(dev:read())
    assert.are.equal(1, hal.writes[#hal.writes].bytes:byte(1) % 4)
    assert.is_true(hal.ms > ms0) -- it slept while the chip was busy
  end)

  it("times out (no raise) if status bit 3 never clears", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    local dev = bme.new(hal, { address = 0x76, timeout_s = 0.1 })
    hal.stuck_measuring = true
    local r, err = dev:read()
    assert.is_nil(r); assert.matches("timeout", err)
  end)

  it("returns nil, err (no raise) on a bus error", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    local dev = bme.new(hal, { address = 0x76 })
    hal.fail_i2c = true
    local r, err = dev:read()
    assert.is_nil(r); assert.matches("NACK", err)
  end)

  it("rejects unsupported oversampling values", function()
    local hal = fake.with_bme280(0x76, V.sets[1], V.sets[1].cases[1])
    assert.has_error(function() bme.new(hal, { address = 0x76, osrs_t = 3 }) end)
  end)
end)
