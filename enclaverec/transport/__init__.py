"""Protobuf messages, tensor (de)serialisation and gRPC credentials over attested TLS."""
