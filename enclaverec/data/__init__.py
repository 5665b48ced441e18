"""Data sets in the Criteo schema: readers, built-in sources, splits, partitions, files."""
