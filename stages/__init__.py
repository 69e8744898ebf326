"""The stage entry points (python -m stages.<name>): thin Hydra apps around the pipeline library."""

from pipeline.schema import register

# conf/'s defaults lists name the config schema in Hydra's ConfigStore: it must be there before any
# entry point composes
register()
