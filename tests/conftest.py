"""Shared fixtures. Two logical CPU devices are configured before TensorFlow initialises,
so MirroredStrategy runs two replicas on this GPU-less machine (FACTS.md)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
