# Test double for MicroPython's `network` module.
STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = -3
STAT_NO_AP_FOUND = -2
STAT_CONNECT_FAIL = -1
STAT_GOT_IP = 3


class WLAN:
    # number of connect() calls that will fail before one succeeds
    fail_next = 0
    instances = []

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._connected = False
        self._status = STAT_IDLE
        self.connect_calls = []
        self.fail_next = WLAN.fail_next
        WLAN.instances.append(self)

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)

    def connect(self, ssid, password):
        self.connect_calls.append((ssid, password))
        if self.fail_next > 0:
            self.fail_next -= 1
            self._connected = False
            self._status = STAT_NO_AP_FOUND
        else:
            self._connected = True
            self._status = STAT_GOT_IP

    def disconnect(self):
        self._connected = False
        self._status = STAT_IDLE

    def drop(self):
        """Test hook: the AP goes away."""
        self._connected = False
        self._status = STAT_CONNECT_FAIL

    def isconnected(self):
        return self._connected

    def status(self):
        return self._status

    def ifconfig(self):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")
