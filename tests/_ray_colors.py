"""The test encoder as a plugin module, for Ray workers: they are other processes, so they do not
see the plugin conftest.py registers in the test process (``ray_plugins=["_ray_colors"]``)."""

from conftest import ColorEncoder

import clipseek


@clipseek.hookimpl
def register_encoders(register):  # type: ignore[no-untyped-def]
    register(ColorEncoder)
