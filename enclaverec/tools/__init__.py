"""Host-side tooling that no enclave role imports: Gramine manifests, the simulated
`/dev/attestation`. Nothing here is measured into an enclave."""
