"""The few cupy.cuda names tinyvision touches: one pretend device."""


class runtime:  # noqa: N801
    @staticmethod
    def getDeviceCount():  # noqa: N802
        return 1


class Device:
    def __init__(self, device_id=0):
        self.id = device_id
        self.attributes = {"MaxSharedMemoryPerBlockOptin": 232_448}     # an H100's 227 KB
        self.compute_capability = "90"      # as CuPy spells it: an H100

    def synchronize(self):
        pass
