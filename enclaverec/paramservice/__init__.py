"""The parameter service: named, versioned arrays combined from weighted updates (no TensorFlow)."""
