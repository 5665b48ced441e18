"""Data sets in the Criteo schema: readers, built-in sources, splitting, partitioning, encrypted files."""
