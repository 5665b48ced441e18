"""Secure distributed training: key broker, parameter servers, workers and owner commands."""
