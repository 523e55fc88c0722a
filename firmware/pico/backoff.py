# Exponential backoff driven by an injected clock (seconds).
class Backoff:
    def __init__(self, initial=1, maximum=300, factor=2):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.delay = 0
        self.next_at = 0
        self.failures = 0

    def ready(self, now):
        return now >= self.next_at

    def fail(self, now, at_least=0):
        self.failures += 1
        self.delay = self.initial if not self.delay else min(self.maximum, self.delay * self.factor)
        self.next_at = now + max(self.delay, at_least)
        return self.next_at - now

    def ok(self):
        self.delay = 0
        self.next_at = 0
        self.failures = 0
