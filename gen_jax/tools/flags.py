"""Flags the tools share, and their one error and exit policy.

Exit 2 with one `error:` line for usage and config errors (a bad flag, a
missing or broken config file, an unknown `:variant` or config key, a workdir
that is not one); exit 1 with one line for failures while running (a
non-finite loss, an unreadable file); `--traceback` shows the stack instead.
A tool never exits 0 after an error.
"""

import difflib
import functools
import importlib.util
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


class ConfigError(ValueError):
    """A config file, variant or override that cannot be loaded."""


def define_config(help_text: str = "") -> None:
    config_flags.DEFINE_config_file(
        "config",
        None,
        (help_text + " " if help_text else "")
        + "Experiment config file and variant, e.g. configs/vae_digits.py:smoke; "
        "override any field with --config.a.b=value.",
        lock_config=True,
    )


def define_workdir(help_text: str) -> None:
    flags.DEFINE_string("workdir", None, help_text)


def define_seed(help_text: str = "Sampling seed.") -> None:
    flags.DEFINE_integer("seed", 0, help_text)


def define_num_samples(default: int, help_text: str = "How many samples.") -> None:
    flags.DEFINE_integer("num_samples", default, help_text)


def define_sampler() -> None:
    """Diffusion sampling flags; unset ones keep the run's config."""
    flags.DEFINE_string(
        "sampler",
        None,
        "Diffusion sampler, one of the run's objective's (its record in "
        "gen_jax/families/diffusion_objectives.py; a wrong one is refused "
        "naming the valid ones).",
    )
    flags.DEFINE_integer("sampler_steps", None, "Diffusion sampler steps.")
    flags.DEFINE_float("guidance", None, "Diffusion classifier-free guidance scale.")
    flags.DEFINE_float("eta", None, "Diffusion DDIM eta (0: deterministic).")


def apply_sampler_overrides(config, workdir: str) -> dict:
    """Sets the sampler flags given into the config keys the run's family
    reads them from; returns {key: value} of those set (flags left out keep
    the run's own values)."""
    from gen_jax import families

    values = {
        "sampler": FLAGS.sampler,
        "sampler_steps": FLAGS.sampler_steps,
        "guidance": FLAGS.guidance,
        "eta": FLAGS.eta,
    }
    given = {flag: v for flag, v in values.items() if v is not None}
    keys = families.sampler_flags(config)
    if unknown := sorted(set(given) - set(keys)):
        raise app.UsageError(
            f"{', '.join('--' + f for f in unknown)}: {workdir!r} trains "
            f"{config.family!r}, whose sampler takes "
            f"{', '.join('--' + f for f in keys) or 'no sampling flags'}"
        )
    config.update_from_flattened_dict({keys[f]: v for f, v in given.items()})
    return {keys[f].rsplit(".", 1)[1]: v for f, v in given.items()}


def require(*names: str) -> None:
    missing = [f"--{n}" for n in names if FLAGS[n].value is None]
    if missing:
        raise app.UsageError(f"{' and '.join(missing)} required")


def _config_spec(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)


def load_config_file(spec: str):
    """The config of a `path[:arg]` spec (a tool's default config), errors in words."""
    return _load_config(spec)


def _load_config(spec: str):
    """Imports the --config file as config_flags will, raising ConfigError in words."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found (--config={spec})")
    # configs/*.py import `configs.base`: make the configs package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))
    module_spec = importlib.util.spec_from_file_location("_gen_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as e:
        raise ConfigError(f"--config={spec}: {type(e).__name__}: {e}") from e


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        keys.append(prefix + k)
        if hasattr(v, "items"):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _override_error(config, argv: list[str], error: Exception) -> str:
    """One line naming a bad override and the nearest valid key."""
    keys = _flat_keys(config) if config is not None else []
    for a in argv:
        if a.startswith("--config.") and "=" in a:
            key = a[len("--config.") :].split("=", 1)[0]
            if keys and key not in keys:
                near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
                hint = f"; did you mean config.{near[0]}?" if near else ""
                return f"unknown config key config.{key}{hint}"
    return str(error)  # flag type errors name the key already


def parse(argv: list[str], tool: str) -> list[str]:
    """Parses `argv` into FLAGS; `--help` prints the help of `tool` (a module
    name) and exits 0."""
    if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
        print(_help(argv[0], tool))
        sys.exit(0)
    spec = _config_spec(argv)
    config = None
    try:
        if spec is not None:
            config = _load_config(spec)
        return FLAGS(argv)
    except ConfigError as e:
        _exit(2, str(e))
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        _exit(2, _override_error(config, argv, e))


def _help(program: str, tool: str) -> str:
    doc = (sys.modules[tool].__doc__ or "").strip()
    own = FLAGS.module_help(tool)
    shared = FLAGS.module_help(__name__)
    return f"usage: {program} [flags]\n\n{doc}\n\n{own}\n{shared}".rstrip()


def _exit(code: int, message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def quiet_libraries() -> None:
    """Keeps INFO lines from gen_jax only (orbax logs each save in ~30 lines);
    warnings and errors from every library still show. --v=1 shows all."""
    if logging.get_verbosity() <= logging.INFO:
        logging.get_absl_handler().addFilter(
            lambda r: (
                r.levelno > logging.converter.STANDARD_INFO
                or f"{os.sep}gen_jax{os.sep}" in r.pathname
            )
        )


def default_cache_dir() -> str:
    """$GEN_JAX_CACHE, else $XDG_CACHE_HOME/gen_jax/xla (~/.cache/gen_jax/xla)."""
    if os.environ.get("GEN_JAX_CACHE"):
        return os.environ["GEN_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "gen_jax", "xla")


def enable_compilation_cache() -> None:
    """XLA's persistent compilation cache, on unless --nocompilation_cache: a
    second run of a config loads its programs instead of compiling them. An
    explicit JAX_COMPILATION_CACHE_DIR (the tests' shared cache) wins."""
    if not FLAGS.compilation_cache:
        return
    import jax

    directory = FLAGS.compilation_cache_dir or (
        jax.config.jax_compilation_cache_dir or default_cache_dir()
    )
    jax.config.update("jax_compilation_cache_dir", directory)


def run(
    main: Callable[[list[str]], None],
    tool: str,
    argv: list[str],
    dry_run: Callable[[], None] | None = None,
) -> None:
    """Runs `main` as an absl app under the exit policy above; `tool` is the
    tool's module name (its docstring and flags are its --help); `dry_run`,
    the tool's own checks and account of what it would do under --dry_run
    (after the flags and config are printed)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF/XLA load
    flags.DEFINE_bool("traceback", False, "Show the stack of an error.")
    flags.DEFINE_bool(
        "dry_run",
        False,
        "Parse the flags and load the config, print what would run, run nothing.",
    )

    flags.DEFINE_bool(
        "compilation_cache",
        True,
        "Keep compiled XLA programs across runs (--nocompilation_cache: off).",
    )
    flags.DEFINE_string(
        "compilation_cache_dir",
        None,
        "Where (default: $GEN_JAX_CACHE, else ~/.cache/gen_jax/xla).",
    )

    def guarded(args: list[str]) -> None:
        quiet_libraries()
        try:
            if FLAGS.dry_run:
                _print_dry_run(args)
                if dry_run:
                    dry_run()
                return
            enable_compilation_cache()
            main(args)
        except Exception as e:
            if FLAGS.traceback:
                raise
            _exit(_exit_code(e), _describe(e))

    app.run(guarded, argv=argv, flags_parser=functools.partial(parse, tool=tool))


def _print_dry_run(args: list[str]) -> None:
    if len(args) > 1:
        _exit(2, f"unexpected arguments: {args[1:]}")
    given = {
        name: FLAGS[name].value
        for name in sorted(FLAGS)
        if FLAGS[name].present and name not in ("dry_run", "config")
    }
    print(f"{args[0]}: would run with {given}")
    if "config" in FLAGS and FLAGS.config is not None:
        print(FLAGS.config)


def _exit_code(e: Exception) -> int:
    from gen_jax import checkpoint

    bad_input = (
        app.UsageError,
        ConfigError,
        ValueError,
        FileNotFoundError,
        checkpoint.CheckpointError,
    )
    return 2 if isinstance(e, bad_input) else 1


def _describe(e: Exception) -> str:
    if isinstance(e, (app.UsageError, ValueError, FileNotFoundError)) or type(
        e
    ).__module__.startswith("gen_jax"):
        return str(e)
    return f"{type(e).__name__}: {e} (--traceback shows where)"
