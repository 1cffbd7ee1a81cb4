"""Data: synthetic distortions, list files, and the tf.data input pipelines."""
