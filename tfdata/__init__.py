"""tfdata: the data contract, audio decoding, TFRecord I/O, the tf.data input pipeline, synthetic data."""
