"""Test double of picamera2 for Veriscope's camera tests, over simulated imx477 and imx708 sensors.

This folder (``device/tests/fakes/picamera2``) is put on ``sys.path`` by the
camera tests only; it is never installed, so the daemon can never import it.

It keeps picamera2's call signatures, configuration dicts, metadata keys and
value types, and the behaviour that code driving a real camera must cope with:

- ``RGB888`` arrays hold pixels in [B, G, R] order and ``BGR888`` in [R, G, B]
  (picamera2 names formats the other way round from numpy's view); the
  preview default ``XBGR8888`` has four channels.
- ``set_controls`` refuses a control the sensor does not advertise with
  picamera2's ``RuntimeError``, and a value libcamera could not convert with
  ``TypeError``.
- Controls take effect two frames after the request that carries them;
  ``configure`` replaces controls not yet delivered with the configuration's.
- Metadata holds the values actually used: exposure a whole number of sensor
  lines, gain a sensor gain code, both clamped to the sensor's limits and the
  exposure to the frame duration limit; AE converges over frames; the lens
  moves a limited distance per frame, and only in manual AF mode.
- A queued configuration (``buffer_count`` > 1) hands a caller who has been
  idle the last completed frame at once, exposed before the call.
- ``configure`` on a started camera raises; ``capture_request`` or
  ``switch_mode`` on a stopped camera, or with every buffer held, raises
  where the real library would wait forever.
- ``global_camera_info()`` is empty with no camera, and ``Picamera2(n)`` then
  raises ``IndexError``; opening a camera twice raises ``RuntimeError``.

Tests drive the hardware through :mod:`picamera2._fake_hardware`.
"""

from picamera2.picamera2 import CompletedRequest, Picamera2

__all__ = ["CompletedRequest", "Picamera2"]
