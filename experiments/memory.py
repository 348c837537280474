r"""The memory plan of a run before it starts: per device, resident state and round temporaries.

  python -m experiments.memory --config=configs/halos.py --config.model.name=pythia-410m \
      --devices=8 --device_memory_gb=16

Prints, for each device of a mesh of --devices devices (default: this host's), the simulation
state resident there (from the shapes and the layout: halos_jax/replay/layout.py), a batch's
inputs and one round's temporaries (XLA's memory analysis of the compiled round program on this
backend), and whether the fullest device fits --device_memory_gb (default: what the device
reports; none on CPU). When it does not fit, it tries remat and smaller micro-batches and prints
the flags of the first setting that fits. Nothing is allocated; the round program is compiled.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from halos_jax import cli
from halos_jax import config_lib
from halos_jax import memory
from halos_jax import validation

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Algorithm config file, e.g. configs/halos.py.", lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 0, "Devices of the mesh (0: this host's).")
_MEMORY = flags.DEFINE_float("device_memory_gb", 0.0,
                             "Memory of one device in GB (0: config.replay.device_memory_gb, or "
                             "what the device reports).")
flags.mark_flags_as_required(["config"])


def main(argv):
  cli.no_arguments(argv)
  import jax  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    validation.validate_config(config, with_problem=False)
    config = config_lib.resolve(config)
    devices = _DEVICES.value or jax.device_count()
    if devices < 1:
      raise ValueError(f"--devices={devices}: must be >= 1")
    if _MEMORY.value:
      config.replay.device_memory_gb = _MEMORY.value
    limit = memory.device_memory_bytes(config)
    p = memory.plan(config, devices)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  print(f"{config.algorithm}, model {config.model.name}, env {config.env}, local batch "
        f"{config.local_batch} x {config.data.seq_len} tokens")
  print("\n".join(memory.describe(p, limit)))
  if limit and not p.fits(limit):
    found = memory.suggestions(config, devices, limit)
    if found:
      m, remat, q = found[0]
      print(f"fits with --config.micro_batch={m} --config.model.remat={remat}: fullest device "
            f"{q.peak(q.fullest) / memory.GB:.2f} GB (temporaries "
            f"{(q.temporaries or 0) / memory.GB:.2f} GB)")
    else:
      print("no micro_batch / remat setting tried fits: use more devices (--devices) or "
            "devices with more memory")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
