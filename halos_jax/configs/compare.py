r"""The paper's comparison (issue 6): five algorithms, or one ablation, on one environment.

Every entry is an ordinary run of `halos_jax.train.train_and_evaluate` in WORKDIR/<entry>, its
config taken from configs/<algorithm>.py:get_config(<arg>) with `overrides` applied; then
WORKDIR/comparison.{md,json} and val_loss_vs_{time,tokens}.png are written
(halos_jax/compare.py). Re-running resumes (or reuses) every entry.

All five algorithms, tiny model on the embedded corpus with the paper's geo4 timing (~30 min on
2 CPU cores):
  python -m experiments.compare --config=configs/compare.py:runlocal --workdir=runs/compare_geo4
An ablation of HALoS (same table, one entry per value; the reference value's entry is the one
whose speed-up is reported):
  python -m experiments.compare --config=configs/compare.py:runlocal,ablate=beta \
      --workdir=runs/ablate_beta
Hand-checkable toy problem (seconds): --config=configs/compare.py:quadratic
Shrink every entry (any field of the algorithm configs, dotted):
  --config.overrides='total_local_steps=256,val_interval=32'

Arguments (comma-separated words):
  runlocal    tiny model, embedded corpus, geo4 timing (the default when no word selects a size)
  quadratic   the quadratic toy problem (configs/<alg>.py:quadratic)
  full        the paper's Pythia-70M configuration (set data.path through `overrides`)
  paper_shape the paper's round structure (98,304 local steps, its H, K, alpha, momenta, LR
              schedule) with the `micro` model (config_lib.shrink_to_paper_shape): about
              5 min per entry on 2 cores
  ablate=X    X in K, alpha, beta (beta_l, beta_g pairs), H, codec, global_codec, streaming
              ((fragments, overlap_steps) pairs of streaming_diloco): HALoS (or
              `ablation_algorithm`) with each of `ablation_values`
"""
import ml_collections

ALGORITHMS = ("ddp", "diloco", "diloco_dynupd", "async_local_sgd", "halos")

# Values of each ablation; the reference value (configs/halos.py) is among them.
ABLATION_VALUES = {
    "K": (8, 16, 32, 64),  # LPS updates between Deltas; reference 32
    "alpha": (0.1, 0.25, 0.5, 1.0),  # weight of the global model in the LPS merge; reference 0.25
    # (beta_l, beta_g): the paper's hierarchical momentum is high local (0.9) with conservative
    # global (0.5) momentum; the other pairs swap, equalise or drop one of the two.
    "beta": ((0.9, 0.5), (0.9, 0.9), (0.5, 0.9), (0.9, 0.0), (0.0, 0.5)),
    "H": (4, 8, 16, 32),  # local steps per round (rescaled by speed); reference 8
    # The worker -> server codec (docs/codecs.md; topk: 1 % with error feedback); reference none.
    # For Async Local-SGD: --config.ablation_algorithm=async_local_sgd.
    "codec": ("none", "bf16", "int8", "int4", "topk"),
    "global_codec": ("none", "bf16", "int8", "int4", "topk"),  # HALoS's Delta to the GPS
    # Streaming DiLoCo's (fragments P, overlap_steps tau); reference (2, 8) (configs/
    # streaming_diloco.py); this ablation varies streaming_diloco, not HALoS.
    "streaming": ((1, 0), (2, 0), (2, 4), (2, 8)),
}


def get_config(arg=None):
  words = [w.strip() for w in (arg or "").split(",") if w.strip()]
  sizes = [w for w in words if w in ("runlocal", "quadratic", "full", "paper_shape")]
  ablations = [w.partition("=")[2] for w in words if w.startswith("ablate=")]
  unknown = [w for w in words if w not in sizes and not w.startswith("ablate=")]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; allowed: runlocal, quadratic, full, "
                     "paper_shape, ablate=K|alpha|beta|H|codec|global_codec|streaming")
  if len(sizes) > 1:
    raise ValueError(f"config arguments {sizes}: choose one of runlocal, quadratic, full, "
                     "paper_shape")
  if len(ablations) > 1 or (ablations and ablations[0] not in ABLATION_VALUES):
    raise ValueError(f"ablate={','.join(ablations)}: choose one of {', '.join(ABLATION_VALUES)}")
  size = sizes[0] if sizes else "runlocal"

  c = ml_collections.ConfigDict()
  c.arg = "" if size == "full" else size  # argument of every configs/<algorithm>.py:get_config
  c.algorithms = ALGORITHMS  # entries when no ablation is selected, in table order
  c.reference = ""  # entry whose speed-up is reported ('': halos, or the ablation's default)
  c.ablation = ablations[0] if ablations else ""  # '' (compare algorithms), K, alpha, beta or H
  # The algorithm whose field(s) the ablation varies.
  c.ablation_algorithm = "streaming_diloco" if ablations == ["streaming"] else "halos"
  c.ablation_values = ABLATION_VALUES[ablations[0]] if ablations else ()  # one entry per value
  c.targets = ()  # validation-loss targets; empty: num_auto_targets between first and best final
  c.num_auto_targets = 4  # automatic targets (the last one is the best final loss)
  # Applied to every entry config that has the field: 'key=value,other.key=value'.
  # Validation every 32 local steps (runlocal default 128) resolves time-to-target finely; it
  # costs a forward pass of 64 sequences each and does not change the training.
  c.overrides = "val_interval=32" if size == "runlocal" else ""
  c.configs_dir = ""  # where configs/<algorithm>.py live ('': the package's, halos_jax/configs/)
  c.plots = True  # write val_loss_vs_{time,tokens}.png
  return c
