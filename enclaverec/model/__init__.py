"""TensorFlow lives here: DLRM layers, sparse optimizers and the trainer."""
