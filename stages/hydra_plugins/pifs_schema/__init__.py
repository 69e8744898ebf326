"""Registers the config schema (pipeline.schema) when Hydra scans its plugins.

conf/'s defaults lists name the schema in Hydra's ConfigStore. The stages register it themselves; a Hydra that
composes conf/ on its own finds it here: DVC's `dvc exp run -S` puts stages/ (.dvc/config's
hydra.plugins_path) on the path and scans the `hydra_plugins` namespace before it composes. It lives under
stages/ so that an installed pifs registers nothing in other Hydra apps.
"""

from pipeline.schema import register

register()
