"""The test encoder as a plugin module, for Ray workers: they are other processes, so they do not
see the plugin conftest.py registers in the test process (``ray_plugins=["_ray_colors"]``).

With ``CLIPSEEK_TEST_ENCODE_LOG`` set (the Ray fixture sets it for the workers), every image a
worker encodes appends a line with its size to that file: the tests' evidence of what the workers
encoded, which a report count cannot give."""

import os

from conftest import ColorEncoder

import clipseek


class LoggingColorEncoder(ColorEncoder):
    def _embed_images(self, images):  # type: ignore[no-untyped-def]
        log = os.environ.get("CLIPSEEK_TEST_ENCODE_LOG")
        if log:
            with open(log, "a") as fp:  # one write per call: the actors append side by side
                fp.write("".join(f"{im.width}x{im.height}\n" for im in images))
        return super()._embed_images(images)


@clipseek.hookimpl
def register_encoders(register):  # type: ignore[no-untyped-def]
    register(LoggingColorEncoder)
