"""The stages: thin Hydra apps (python -m stages.<name>) around the library in pipeline/."""

from pipeline.schema import register

# conf/'s defaults lists name the config schema in Hydra's ConfigStore: it must be there before any
# entry point composes
register()
