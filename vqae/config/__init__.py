"""The config: nested dataclasses, the only home of defaults, types and valid ranges.

- `sections`: the dataclasses (`Config` and its sections `DataConfig`, `ModelConfig`, ...),
  a comment per field with its range or choices
- `parse`: YAML files (only the diff from the defaults), `--section.key=value` overrides and the
  checks that turn a bad key, type or value into one line naming it

`from vqae.config import Config, load_config, ...` is the public face; no torch.
"""

from vqae.config.parse import (
    absolute_paths,
    check_depth,
    dump_yaml,
    field_type,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    to_dict,
    validate,
)
from vqae.config.sections import (
    CODEBOOK_MAX,
    DEPTH_MAX,
    DEVICES,
    INT_MAX,
    PATH_KEYS,
    SEED_MAX,
    WIDTH_MAX,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    QuantizerConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "CODEBOOK_MAX", "DEPTH_MAX", "DEVICES", "INT_MAX", "PATH_KEYS", "SEED_MAX", "WIDTH_MAX",
    "Config", "DataConfig", "ModelConfig", "OptimConfig", "QuantizerConfig", "RunConfig",
    "TrainConfig", "absolute_paths", "check_depth", "dump_yaml", "field_type", "from_dict",
    "load_config", "parse_override", "read_yaml", "to_dict", "validate",
]
