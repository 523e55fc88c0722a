# Bounded ring of serialized readings persisted on flash.
#
# Data file: `capacity` fixed-size slots (2-byte length + payload).
# Meta file: "capacity slot head count dropped", replaced atomically (rename).
# append(): write the slot, then the meta.  When full the oldest entry is
# overwritten and `dropped` counts it.  peek(n) returns the oldest n entries;
# ack(n) removes them -- only call it after the server accepted them, so a
# crash mid-flush re-sends (the server de-duplicates by (node_id, seq)).
import os


class BufferError(Exception):
    pass


class RingBuffer:
    def __init__(self, path, capacity, slot_size=512, log=None):
        if capacity < 1:
            raise BufferError("buffer_capacity must be >= 1")
        self.path = path
        self.meta_path = path + ".meta"
        self.capacity = capacity
        self.slot_size = slot_size
        self.head = 0
        self.count = 0
        self.dropped = 0
        self._log = log or (lambda *a: None)
        self._load_meta()

    def _load_meta(self):
        try:
            with open(self.meta_path) as f:
                cap, slot, head, count, dropped = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return
        if cap != self.capacity or slot != self.slot_size or not (0 <= head < cap and 0 <= count <= cap):
            self._log("buffer: geometry changed or meta corrupt; discarding %d entries" % count)
            self.dropped = dropped + count
            self._save_meta()
            return
        self.head, self.count, self.dropped = head, count, dropped

    def _save_meta(self):
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d %d %d %d %d" % (self.capacity, self.slot_size, self.head, self.count, self.dropped))
        os.rename(tmp, self.meta_path)

    def _open(self):
        try:
            return open(self.path, "r+b")
        except OSError:
            with open(self.path, "wb"):
                pass
            return open(self.path, "r+b")

    def __len__(self):
        return self.count

    def append(self, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        if len(data) > self.slot_size - 2:
            raise BufferError("entry of %d bytes exceeds slot size %d" % (len(data), self.slot_size - 2))
        idx = (self.head + self.count) % self.capacity
        off = idx * self.slot_size
        with self._open() as f:
            f.seek(0, 2)
            size = f.tell()
            if size < off:
                f.write(bytes(off - size))
            f.seek(off)
            f.write(bytes([len(data) >> 8, len(data) & 0xFF]))
            f.write(data)
        if self.count == self.capacity:
            self.head = (self.head + 1) % self.capacity
            self.dropped += 1
        else:
            self.count += 1
        self._save_meta()

    def peek(self, n):
        out = []
        n = min(n, self.count)
        if not n:
            return out
        with open(self.path, "rb") as f:
            for i in range(n):
                f.seek(((self.head + i) % self.capacity) * self.slot_size)
                hdr = f.read(2)
                ln = (hdr[0] << 8) | hdr[1]
                out.append(f.read(ln).decode())
        return out

    def ack(self, n):
        n = min(n, self.count)
        if n <= 0:
            return
        self.head = (self.head + n) % self.capacity
        self.count -= n
        self._save_meta()
