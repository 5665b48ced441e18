"""Trusted-execution layer: evidence backends, DCAP verification and policy, RA-TLS, attested CA, sealing."""
