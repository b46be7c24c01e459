"""Training for Veriscope's authenticity model: data, network, int8 export, calibration and bundles.

Run ``python -m veriscope.training --help``. Needs TensorFlow (requirements-train.lock);
the device never imports this package.
"""
