"""TensorFlow, imported in one place and typed as ``Any``, since it ships no type stubs."""

import importlib
from typing import Any

tf: Any = importlib.import_module("tensorflow")
keras: Any = tf.keras
