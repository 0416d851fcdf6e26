"""Configuration: structured schemas and Hydra composition of ``conf/``."""

from robustctl.config.compose import compose, config_dir, group_options, selected_options, validate
from robustctl.config.schema import RunConfig

__all__ = ["RunConfig", "compose", "config_dir", "group_options", "selected_options", "validate"]
