"""The one place that imports TensorFlow and Keras, quietly and with the TensorFlow backend.

TensorFlow 2.21 writes start-up notices (oneDNN, CPU features, absl) straight to file
descriptor 2 while it loads, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; they would bury the
command's own output. The import runs with descriptor 2 pointed at a temporary file, which
is replayed only if the import fails.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from enclaverec.errors import ConfigError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    raise ConfigError(
        f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} is set; enclaverec's model needs "
        "the tensorflow backend (unset the variable)"
    )


def _import_quietly():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras as keras_module
            import tensorflow as tf_module
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf_module, keras_module


tf, keras = _import_quietly()
# TensorFlow's Python logger reports routine steps at INFO ("Assets written to ...").
if tf.get_logger().level == logging.NOTSET:
    tf.get_logger().setLevel(logging.WARNING)

__all__ = ["keras", "tf"]
