"""enclaverec: confidential training of DLRM recommendation models in SGX enclaves."""

__version__ = "0.1.0"
