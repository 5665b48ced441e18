"""The application layer: each job as a typed, frozen configuration that owns its defaults,
and a library function that runs it and returns a typed result.

``cli`` turns flags and TOML into these configurations and prints the results; ``demo``
and the benchmarks call the same functions (never argv). Host side only: no enclave role
imports this package.
"""
