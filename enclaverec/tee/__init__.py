"""Trusted execution: evidence backends, DCAP verification, policies, RA-TLS, sealing."""
