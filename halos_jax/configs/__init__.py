"""The run configs, one `get_config(arg)` file per algorithm, and the environment presets.

They ship inside the installed package (`envs/*.yaml` as package data); the checkout's
top-level `configs` is a link to this folder, so `--config=configs/halos.py` works from the
checkout and, through `halos_jax.cli.resolve_config_path`, from any directory once the package
is installed.
"""
import pathlib

CONFIGS_DIR = pathlib.Path(__file__).resolve().parent
ENVS_DIR = CONFIGS_DIR / "envs"
