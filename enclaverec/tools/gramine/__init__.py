"""Gramine manifests: :mod:`.render` (options, layout, TOML), :mod:`.probe` (what a role's
interpreter loads), :mod:`.closure` (the trusted files), :mod:`.check` (fit for production)."""
