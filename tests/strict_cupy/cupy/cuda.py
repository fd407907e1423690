"""The few cupy.cuda names tinyvision touches: one pretend device."""


class runtime:  # noqa: N801
    @staticmethod
    def getDeviceCount():  # noqa: N802
        return 1


class Device:
    def __init__(self, device_id=0):
        self.id = device_id
        self.attributes = {}

    def synchronize(self):
        pass
