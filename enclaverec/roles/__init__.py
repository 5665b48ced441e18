"""One entry module per enclave role (``python3 -m enclaverec.roles.<role>``).

Each entry is small and imports only what its role runs: the role's closure (the entry and
every ``enclaverec`` module it imports, found by :mod:`enclaverec.tee.closure`) is what the
simulated MRENCLAVE measures and what the Gramine manifest trusts. The table of roles is
:data:`enclaverec.tee.roles.ROLE_SPECS`.
"""
