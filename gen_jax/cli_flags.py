"""Command-line parsing shared by the entry points (training, `gen-jax bench`):
a bad `--config` override ends the program with one line naming the key and
the nearest valid one, before anything compiles."""

import difflib
import importlib.util
import os
import sys

from absl import flags


def _load_config_file(argv: list[str]):
    """Imports the --config file as config_flags will, for error messages."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_gen_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        keys.append(prefix + k)
        if hasattr(v, "items"):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _config_error(argv: list[str], error: Exception) -> str:
    """One line naming the bad override and the nearest valid key."""
    try:
        keys = _flat_keys(_load_config_file(argv) or {})
    except Exception:  # noqa: BLE001 (a broken file: report the original error)
        keys = []
    for a in argv:
        if a.startswith("--config.") and "=" in a:
            key = a[len("--config.") :].split("=", 1)[0]
            if keys and key not in keys:
                near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
                hint = f"; did you mean config.{near[0]}?" if near else ""
                return f"unknown config key config.{key}{hint}"
    return " ".join(str(error).split())  # flag type errors name the key already


def parse(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
    """Parses `argv` into `flag_values`; a config error exits with one line.

    Shared by training and `gen-jax bench` (which has its own FlagValues)."""
    # The configs/ directory imports `configs.base`: make its parent importable.
    for a in argv:
        if a.startswith("--config="):
            path = a.split("=", 1)[1].partition(":")[0]
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))
    try:
        return flag_values(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        print(f"error: {_config_error(argv, e)}", file=sys.stderr)
        sys.exit(2)
