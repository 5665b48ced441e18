"""The DLRM described without TensorFlow: presets, shapes, weight names and initial weights.

The TensorFlow model (``enclaverec.model``) builds itself from these, and the enclave side
(the aggregator, parameter servers) uses them to know the model's layout and to make the
initial global model without importing TensorFlow.
"""
