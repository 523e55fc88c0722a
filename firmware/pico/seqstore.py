# Persistent, monotonically increasing reading sequence number.
import os


class SeqStore:
    def __init__(self, path):
        self.path = path
        self._next = 1
        try:
            with open(path) as f:
                self._next = int(f.read().strip()) + 1
        except (OSError, ValueError):
            # missing or corrupt: try the temp file of an interrupted write
            try:
                with open(path + ".tmp") as f:
                    self._next = int(f.read().strip()) + 1
            except (OSError, ValueError):
                pass

    def peek(self):
        return self._next

    def next(self):
        n = self._next
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(n))
        os.rename(tmp, self.path)  # persist BEFORE handing the number out
        self._next = n + 1
        return n
