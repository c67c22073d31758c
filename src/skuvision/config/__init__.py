"""The config tree's one source of truth outside YAML: composition (compose), override parsing (overrides) and
validation (schema). Import the submodule you need: this package imports nothing, so the Hydra launcher
plugin can read override syntax without loading torch."""
