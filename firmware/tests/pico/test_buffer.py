from buffer import RingBuffer, BufferError
from helpers import tmpdir, raises


def test_order_and_ack():
    d = tmpdir("buf1")
    b = RingBuffer(d + "/ring", 5)
    for i in range(3):
        b.append('{"seq": %d}' % i)
    assert b.peek(10) == ['{"seq": 0}', '{"seq": 1}', '{"seq": 2}']
    assert b.peek(2) == ['{"seq": 0}', '{"seq": 1}']
    assert len(b) == 3  # peek does not remove
    b.ack(2)
    assert b.peek(10) == ['{"seq": 2}']


def test_capacity_bound_drops_oldest_and_counts():
    d = tmpdir("buf2")
    b = RingBuffer(d + "/ring", 4)
    for i in range(10):
        b.append("r%d" % i)
    assert len(b) == 4 and b.dropped == 6
    assert b.peek(10) == ["r6", "r7", "r8", "r9"]
    b.ack(1)
    b.append("r10")  # wraps around the ring
    assert b.peek(10) == ["r7", "r8", "r9", "r10"]


def test_persistence_across_reopen():
    d = tmpdir("buf3")
    b = RingBuffer(d + "/ring", 4)
    for i in range(6):
        b.append("r%d" % i)
    b.ack(1)
    b2 = RingBuffer(d + "/ring", 4)  # reboot
    assert b2.peek(10) == ["r3", "r4", "r5"] and b2.dropped == 2
    b2.append("r6")
    assert RingBuffer(d + "/ring", 4).peek(10) == ["r3", "r4", "r5", "r6"]


def test_unacked_entries_survive_crash_mid_flush():
    d = tmpdir("buf4")
    b = RingBuffer(d + "/ring", 8)
    for i in range(3):
        b.append("r%d" % i)
    batch = b.peek(3)  # sent, but "crash" before ack
    assert batch == ["r0", "r1", "r2"]
    assert RingBuffer(d + "/ring", 8).peek(10) == ["r0", "r1", "r2"]


def test_geometry_change_discards_and_oversize_rejected():
    d = tmpdir("buf5")
    b = RingBuffer(d + "/ring", 4, slot_size=32)
    b.append("a")
    b.append("b")
    b2 = RingBuffer(d + "/ring", 8, slot_size=32)
    assert len(b2) == 0 and b2.dropped == 2
    raises(BufferError, b2.append, "x" * 31)
    b2.append("x" * 30)
    assert b2.peek(1) == ["x" * 30]
