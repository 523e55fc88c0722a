require("helper")
local output = require("output")
local fake = require("fake_hal")

local T0 = 1795000000
local function curve_duty(ct) -- a smooth "server" trajectory: 128 + 100 sin
  return math.floor(128 + 100 * math.sin(2 * math.pi * ct / 24) + 0.5)
end

describe("output", function()
  it("applies the live duty via hal.pwm_set (pwm_duty or output_pwm, clamped)", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    o:on_output({ pwm_duty = 200, circadian_time = 3, period_hours = 24 }, T0)
    assert.are.equal(200, hal.duty)
    o:on_output({ output_pwm = 300, circadian_time = 3.1, period_hours = 24 }, T0)
    assert.are.equal(255, hal.duty)
    assert.is_nil((o:on_output({ circadian_time = 1 }, T0)))
  end)

  it("parses UTC ISO 8601 timestamps", function()
    assert.are.equal(1795784700, output.parse_iso8601("2026-11-27T13:05:00Z"))
    assert.are.equal(951782400, output.parse_iso8601("2000-02-29T00:00:00Z"))
    assert.is_nil(output.parse_iso8601("2026-11-27T13:05:00+02:00"))
  end)

  it("stays live within 3 sample intervals, then follows the learned trajectory offline", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    -- learn one full day at 24 h period: an output every 15 min
    local t, ct = T0, 0
    for _ = 1, 96 do
      o:on_output({ pwm_duty = curve_duty(ct), circadian_time = ct, period_hours = 24 }, t)
      t = t + 900; ct = (ct + 0.25) % 24
    end
    local last_t = t - 900
    local last_duty = hal.duty
    local _, mode = o:tick(last_t + 170)
    assert.are.equal("live", mode); assert.are.equal(last_duty, hal.duty)
    -- offline: simulate 12 hours, one tick every 10 min
    local duties, distinct = {}, {}
    for k = 1, 72 do
      local now = last_t + 181 + k * 600
      local d, m = o:tick(now)
      assert.are.equal("offline", m)
      local exp_ct = (23.75 + (now - last_t) / 3600) % 24
      -- follows the learned curve (bin quantisation + interpolation: within 6 duty units)
      assert.is_true(math.abs(d - curve_duty(exp_ct)) <= 6,
        ("ct %.2f duty %d expected ~%d"):format(exp_ct, d, curve_duty(exp_ct)))
      duties[#duties + 1] = d; distinct[d] = true
    end
    local n = 0; for _ in pairs(distinct) do n = n + 1 end
    assert.is_true(n > 20, "offline duty must change over time, got " .. n .. " values")
    local mx = 0; for _, d in ipairs(duties) do if d > mx then mx = d end end
    assert.is_true(mx >= 220, "max offline duty " .. mx)
  end)

  it("advances circadian time at 24/period_hours per real hour", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    o:on_output({ pwm_duty = 10, circadian_time = 6, period_hours = 20 }, T0)
    assert.is_true(math.abs(o:circadian_time(T0 + 5 * 3600) - 12) < 1e-9) -- 5 h * 24/20
    assert.is_true(math.abs(o:circadian_time(T0 + 20 * 3600) - 6) < 1e-9)  -- wraps
  end)

  it("interpolates circularly across midnight between filled bins", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    o:on_output({ pwm_duty = 0, circadian_time = 22.0, period_hours = 24 }, T0)   -- bin centre 22.25
    o:on_output({ pwm_duty = 200, circadian_time = 2.0, period_hours = 24 }, T0)  -- bin centre 2.25
    assert.are.equal(100, o:predict(0.25))   -- halfway around midnight
    assert.are.equal(50, o:predict(23.25))
    assert.are.equal(200, o:predict(2.25))
  end)

  it("an empty curve holds the last duty offline", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    o:on_output({ pwm_duty = 77 }, T0)   -- no circadian_time: nothing learned
    local d, m = o:tick(T0 + 7200)
    assert.are.equal("offline", m); assert.are.equal(77, d)
  end)

  it("a stale retained output (old timestamp) is treated as offline trajectory", function()
    local hal = fake.new({ t = T0 })
    local o = output.new({ hal = hal, sample_interval_s = 60 })
    o:on_output({ pwm_duty = 50, circadian_time = 1.0, period_hours = 24,
                  timestamp = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 - 3 * 3600) }, T0)
    o:on_output({ pwm_duty = 150, circadian_time = 5.0, period_hours = 24,
                  timestamp = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 - 3 * 3600) }, T0)
    local _, m = o:tick(T0)
    assert.are.equal("offline", m)
    assert.is_true(math.abs(o:circadian_time(T0) - 8.0) < 1e-9)
  end)
end)
