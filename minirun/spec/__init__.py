"""config.json: load into typed objects, then validate with a list of named checks."""

from minirun.spec.load import load_bundle, parse_config
from minirun.spec.model import Config

__all__ = ["Config", "load_bundle", "parse_config"]
