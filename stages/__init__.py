"""The stages: thin Hydra apps (python -m stages.<name>) around the library in pipeline/."""
