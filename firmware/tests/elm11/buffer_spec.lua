local H = require("helper")
local buffer = require("buffer")
local seq = require("seq")

local function entry(i) return '{"seq":' .. i .. '}' end

describe("buffer", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("keeps entries oldest first and survives a restart", function()
    local b = buffer.open(dir .. "/b", 10)
    for i = 1, 4 do assert(b:push(entry(i))) end
    local b2 = buffer.open(dir .. "/b", 10)
    assert.are.same({ entry(1), entry(2), entry(3) }, b2:peek(3))
    assert.are.equal(4, b2:count())
  end)

  it("drops the oldest when full and counts the drops (persisted)", function()
    local b = buffer.open(dir .. "/b", 3)
    for i = 1, 7 do b:push(entry(i)) end
    assert.are.equal(3, b:count())
    assert.are.equal(4, b.dropped)
    assert.are.same({ entry(5), entry(6), entry(7) }, b:peek(10))
    local b2 = buffer.open(dir .. "/b", 3)
    assert.are.equal(4, b2.dropped)
    assert.are.same({ entry(5), entry(6), entry(7) }, b2:peek(10))
  end)

  it("removes only the acknowledged oldest entries", function()
    local b = buffer.open(dir .. "/b", 10)
    for i = 1, 5 do b:push(entry(i)) end
    local batch = b:peek(2)
    assert.are.same({ entry(1), entry(2) }, batch)
    assert.are.equal(5, b:count()) -- peek does not remove
    b:remove(2)
    assert.are.same({ entry(3), entry(4), entry(5) }, buffer.open(dir .. "/b", 10):peek(10))
  end)

  it("a shrunk capacity keeps the newest on reopen", function()
    local b = buffer.open(dir .. "/b", 10)
    for i = 1, 5 do b:push(entry(i)) end
    local b2 = buffer.open(dir .. "/b", 2)
    assert.are.same({ entry(4), entry(5) }, b2:peek(10))
    assert.are.equal(3, b2.dropped)
  end)

  it("rejects multi-line entries", function()
    local b = buffer.open(dir .. "/b", 10)
    assert.has_error(function() b:push("{\n}") end)
  end)
end)

describe("sequence numbers", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("start at 1, increment, and persist across restarts", function()
    local s = seq.open(dir .. "/seq")
    assert.are.equal(1, s:take()); assert.are.equal(2, s:take())
    local s2 = seq.open(dir .. "/seq")
    assert.are.equal(3, s2:take())
    assert.are.equal(4, seq.open(dir .. "/seq"):take())
  end)

  it("are found in the temp file when a crash took the old file before the rename", function()
    local s = seq.open(dir .. "/seq")
    s:take(); s:take()
    os.rename(dir .. "/seq", dir .. "/seq.tmp")
    assert.are.equal(3, seq.open(dir .. "/seq"):take())
  end)

  it("are not handed out when they cannot be saved", function()
    local s = seq.open(dir .. "/missing-dir/seq")
    local v, err = s:take()
    assert.is_nil(v)
    assert.is_truthy(err)
    assert.are.equal(1, s.next)
  end)
end)
