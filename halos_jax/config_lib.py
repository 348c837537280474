"""The shared skeleton of every algorithm's config, and the `runlocal` shrink.

Each file in `configs/` is a few lines: it takes `base_config(algorithm)`, sets the reference
hyper-parameters of its algorithm (docs/algorithms.md 2) and, given the argument `runlocal`,
calls `shrink_to_runlocal`. Top-level keys are the scheduler's settings (`halos_jax.schedule`); the
nested blocks belong to the optimizers, the model, the data and the replay.

Units: times in milliseconds of simulated (virtual) time, sizes in sequences unless a name says
tokens or bytes.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from halos_jax import algorithms
from halos_jax.data import stream as data_lib

# config.nonfinite: a round's loss or pseudo-gradient is not finite -> stop with an error, or
# skip that server update (docs/replay.md, "Faults").
NONFINITE_POLICIES = ("stop", "skip")
# Pythia-70M in fp32: 70,426,624 parameters x 4 bytes (docs/algorithms.md 3).
PYTHIA_70M_BYTES = 281_706_496
# One local step of the fastest worker for Pythia-70M, 64 x 2049 tokens (docs/algorithms.md 1).
PYTHIA_70M_STEP_MS = 238.391


def base_config(algorithm: str) -> ml_collections.ConfigDict:
  """Reference settings shared by all five algorithms (Pythia-70M on the Pile, geo4)."""
  algorithms.get(algorithm)  # UnknownAlgorithm (a ValueError) unless a module of that name
  c = ml_collections.ConfigDict()
  c.algorithm = algorithm  # a module of halos_jax/algorithms/: its schedule and server rules
  c.runlocal = False  # True: tiny model on the embedded corpus, paper's timing kept

  # --- Scheduler settings (halos_jax.schedule.ScheduleSettings) -----------------------------
  c.env = "geo4"  # preset in configs/envs/ or a path to an environment YAML file
  c.H = 32  # H: local steps per worker round (before DynUpd rescaling)
  c.rescale_local_steps = False  # DynUpd/DyLU: H_w = max(1, ceil(H * s_w))
  c.K = 32  # K: LPS updates between two Deltas sent to the GPS (HALoS only)
  c.alpha = 0.25  # alpha: weight of the GLOBAL model in the LPS merge (HALoS only)
  c.workers_per_lps = 4  # workers per LPS, all in one region (HALoS only)
  c.total_local_steps = 98_304  # run length in local steps (6,144 iters x 1,024 seqs / 64)
  c.local_batch = 64  # sequences per local step
  # Sequences per micro-batch: a local step accumulates gradients over local_batch / micro_batch
  # parts (the paper's scripts: 32 x 2); None: the whole local batch at once.
  c.micro_batch = config_dict.placeholder(int)  # typed, so that None stays allowed
  c.micro_batch = 32
  c.global_batch = 1_024  # sequences per global iteration (LR schedule position)
  c.step_time_ms = PYTHIA_70M_STEP_MS  # ms per local step at relative speed 1
  c.message_bytes = config_dict.placeholder(int)  # bytes per message; None: fp32 model size

  _add_worker(c)
  _add_exchange(c)
  _add_model_and_data(c)
  _add_evaluation_and_replay(c)
  return c


def _add_worker(c: ml_collections.ConfigDict) -> None:
  # --- Worker inner optimizer: AdamW + warmup/cosine (docs/algorithms.md 2.1) ----------------
  c.worker = ml_collections.ConfigDict()
  c.worker.max_lr = 1e-3  # peak learning rate
  c.worker.min_lr_ratio = 0.1  # min_lr = min_lr_ratio * max_lr
  c.worker.t_warmup = 300  # warmup length in global iterations
  c.worker.t_max = 6_144  # end of the cosine decay in global iterations
  c.worker.b1 = 0.9  # AdamW beta1
  c.worker.b2 = 0.95  # AdamW beta2
  c.worker.eps = 1e-8  # AdamW epsilon
  c.worker.weight_decay = 0.1  # decoupled; weight matrices and embeddings only (docs/optimizers.md)
  c.worker.clip_norm = 1.0  # global-norm gradient clipping


def _add_exchange(c: ml_collections.ConfigDict) -> None:
  # --- Compressed exchanges (docs/codecs.md): none | bf16 | fp8 | int8 | int4 | topk ---------
  c.exchange = ml_collections.ConfigDict()
  c.exchange.codec = "none"  # worker -> server: pseudo-gradients, gradients (all-reduce)
  c.exchange.global_codec = "none"  # HALoS's LPS -> GPS Delta
  c.exchange.model_codec = "none"  # server -> worker models (stateless codecs only)
  c.exchange.block_size = 64  # int8/int4: values per scale
  c.exchange.fraction = 0.01  # topk: fraction of each leaf's entries sent
  c.exchange.error_feedback = config_dict.placeholder(bool)  # None: on for topk only
  # Derived by `resolve` from the codecs (None: message_bytes): each message kind's size.
  for kind in ("upload", "download", "delta", "global"):
    c.exchange[kind + "_bytes"] = config_dict.placeholder(int)


def _add_model_and_data(c: ml_collections.ConfigDict) -> None:
  # --- Model and data -----------------------------------------------------------------------
  c.problem = "lm"  # 'lm' (language model) or 'quadratic' (the hand-checkable toy problem)
  c.model = ml_collections.ConfigDict()
  c.model.name = "pythia-70m"  # tiny | pythia-{14m,70m,160m,410m,1b}
  c.model.compute_dtype = "float32"  # float32 | bfloat16 (params stay fp32)
  c.model.remat = "none"  # none | block: recompute each block's activations in the backward pass
  c.data = data_lib.default_data_config()  # each field documented in halos_jax/data/stream.py
  c.data.source = "mmidx"  # the pre-tokenised, pre-shuffled deduplicated Pile (MMIDIDX)
  c.data.path = ""  # set --config.data.path to the .idx/.bin prefix
  c.data.tokenizer = "gpt2"  # mmidx: tokens are given; GPT-NeoX vocabulary below
  c.data.vocab_size = 50_304  # Pythia's padded vocabulary (token ids must be below it)
  c.data.shuffle = False  # keep the Pile's own pre-shuffled order, like the reference
  c.data.seq_len = 2_048  # input tokens per sequence (entries hold 2,049)
  c.data.val_sequences = 512  # held-out validation sequences (the last ones of the stream)
  c.quadratic = ml_collections.ConfigDict()
  c.quadratic.dim = 16  # loss(x) = 0.5 sum_i h_i (x_i - 1)^2, h = linspace(0.1, 1, dim)
  c.quadratic.worker_lr = 0.1  # constant worker SGD learning rate


def _add_evaluation_and_replay(c: ml_collections.ConfigDict) -> None:
  # --- Evaluation, logging, checkpoints, replay ---------------------------------------------
  c.val_interval = 2_048  # validate the evaluated model every this many local steps
  c.val_batch = 64  # sequences per validation forward pass
  c.log_interval = 256  # train-loss window, in local steps
  c.checkpoint_every = 0  # checkpoint every this many server updates (0: off)
  c.checkpoint_every_s = 600.0  # ... and after this many wall seconds since the last (0: off)
  c.checkpoint_keep = 2  # checkpoints kept
  c.nonfinite = "stop"  # a round's loss/pseudo-gradient not finite: NONFINITE_POLICIES
  c.seed = 0  # model initialisation seed
  c.replay = ml_collections.ConfigDict()
  c.replay.parallel = True  # batch independent worker rounds on the device mesh
  c.replay.num_devices = 0  # devices of the mesh (0: all local devices)
  c.replay.sync_every = 4  # block_until_ready after this many dispatched batches
  # Memory of one device in GB for the memory plan's check before a run (halos_jax/memory.py);
  # 0: what the device reports (GPU/TPU; a CPU reports nothing: no check).
  c.replay.device_memory_gb = 0.0
  c.replay.progress = True  # progress display (a live line on a terminal, log lines otherwise)
  c.replay.plots = True  # write PNG plots at the end


def shrink_to_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny model on the embedded corpus; the paper's TIMING is kept.

  Messages still weigh Pythia-70M's 281,706,496 bytes and a step still takes 238.391 ms at speed
  1 on the same environment, so simulated-time comparisons between algorithms keep their meaning
  while the computed model is tiny. Lengths are scaled down together: the LR schedule keeps the
  paper's proportions (warmup ~5% of the run, cosine to the end).
  """
  c.runlocal = True
  c.model.name = "tiny"
  c.data = data_lib.default_data_config()  # Shakespeare, byte tokens, 256-token inputs
  c.data.val_sequences = 64
  c.local_batch = 4
  c.micro_batch = None  # the whole local batch
  c.global_batch = 64  # 16 workers x 4 sequences, like the paper's 16 x 64
  c.total_local_steps = 1_024  # 64 global iterations of 64 sequences (~1M tokens)
  c.worker.t_warmup = 3  # ~300 / 6,144 of the run
  c.worker.t_max = 64
  c.message_bytes = PYTHIA_70M_BYTES  # keep the paper's message size (Pythia-70M fp32)
  c.val_interval = 128
  c.val_batch = 64
  c.log_interval = 64
  c.checkpoint_every = 0
  c.checkpoint_every_s = 30.0
  return c


def shrink_to_paper_shape(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's round structure with a micro model (issue 17): what the paper runs, but cheap.

  The scheduler's settings stay the paper's: geo4, its H, K, alpha and momenta, 98,304 local
  steps (192 DiLoCo rounds, 303 DynUpd rounds, 4,875 Async updates, 396 GPS updates), Pythia-70M
  messages and step time, and the LR schedule over the paper's 6,144 global iterations (16
  workers x 2 sequences per iteration, like the paper's 16 x 64). The computed model is `micro`
  (byte-level, 2 layers of width 64) on 64-token sequences of the embedded corpus, 2 per local
  step: about 12.6 M tokens per run, about 2.5 passes over the corpus.
  """
  c.runlocal = True
  c.model.name = "micro"
  c.data = data_lib.default_data_config()
  c.data.seq_len = 64
  c.data.val_sequences = 256
  # A second held-out set for choosing learning rates (issue 17): tuning never sees the
  # reported validation loss.
  c.data.tune_sequences = 256
  # The corpus holds about 77,500 training sequences of 64 tokens and a run reads about 197,000
  # (98,304 steps x 2): about 2.5 passes, in the same order for every algorithm.
  c.data.wrap_around = True
  c.local_batch = 2
  c.micro_batch = None
  c.global_batch = 32  # 16 workers x 2 sequences: the paper's iterations of 16 x 64
  c.message_bytes = PYTHIA_70M_BYTES
  c.val_interval = 1_536  # 64 validations over the run
  c.val_batch = 256
  c.log_interval = 512
  c.checkpoint_every = 0
  c.checkpoint_every_s = 60.0  # long runs resume (python -m experiments.train ... again)
  return c


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy with the derived values filled in: `message_bytes` when unset (None).

  The one place the message size is derived: the quadratic's fp32 parameters (4 * dim bytes),
  or the configured model's fp32 parameters (`models.param_bytes`).
  """
  c = ml_collections.ConfigDict(config.to_dict())
  derived = c.get("message_bytes") is None
  if derived:
    if c.get("problem", "lm") == "quadratic":
      c.message_bytes = 4 * int(c.quadratic.dim)
    else:
      from halos_jax import models  # pylint: disable=g-import-not-at-top  (imports JAX)
      c.message_bytes = int(models.param_bytes(models.get_model_config(c.model.name)))
  _resolve_message_sizes(c, derived)
  _resolve_fragment_bytes(c, derived)
  return c


def _resolve_fragment_bytes(c: ml_collections.ConfigDict, derived: bool) -> None:
  """`fragment_bytes` of a streaming algorithm (config.fragments set): the bytes of each
  fragment of the trained model (`fragments.fragment_elements`) when `message_bytes` is
  its size; otherwise left unset, and the schedule splits the message evenly."""
  if c.get("fragments") is None or not derived or c.get("fragment_bytes") is not None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  from halos_jax import fragments  # pylint: disable=g-import-not-at-top
  if c.get("problem", "lm") == "quadratic":
    like = {"x": jax.ShapeDtypeStruct((int(c.quadratic.dim),), "float32")}
  else:
    from halos_jax import models  # pylint: disable=g-import-not-at-top
    lm = models.make_language_model(models.get_model_config(c.model.name))
    like = jax.eval_shape(lambda: lm.init(0))
  flat = jax.tree_util.tree_flatten_with_path(like)[0]
  leaves = [(tuple(str(getattr(k, "key", k)) for k in path), x.shape) for path, x in flat]
  itemsize = {x.dtype.itemsize for _, x in flat}
  if len(itemsize) != 1:  # mixed dtypes: the even split of message_bytes
    return
  size = itemsize.pop()
  c.fragment_bytes = [n * size for n in  # ValueError: more fragments than layers
                      fragments.fragment_elements(leaves, int(c.fragments))]


# Which codec compresses each kind of message.
_CODEC_OF_KIND = {"upload": "codec", "download": "model_codec", "delta": "global_codec"}


def _resolve_message_sizes(c: ml_collections.ConfigDict, derived: bool) -> None:
  """`exchange.<kind>_bytes`: the payload of the kind's codec (docs/codecs.md), for the trained
  model's tree when `message_bytes` is its size, else for one flat fp32 vector of
  message_bytes / 4 values (e.g. runlocal's Pythia-70M-sized messages). Untouched (None) for
  `none`: those messages are `message_bytes`."""
  ex = c.get("exchange")
  if ex is None or all(ex.get(key, "none") == "none" for key in _CODEC_OF_KIND.values()):
    return
  import jax  # pylint: disable=g-import-not-at-top
  from halos_jax import codecs  # pylint: disable=g-import-not-at-top
  if derived and c.get("problem", "lm") != "quadratic":
    from halos_jax import models  # pylint: disable=g-import-not-at-top
    lm = models.make_language_model(models.get_model_config(c.model.name))
    like = jax.eval_shape(lambda: lm.init(0))
  else:
    like = {"x": jax.ShapeDtypeStruct((int(c.message_bytes) // 4,), "float32")}
  for kind, key in _CODEC_OF_KIND.items():
    codec = codecs.from_config(ex, key)
    if codec is not None:
      ex[kind + "_bytes"] = int(codec.payload_bytes(like))


def parse_args(arg: str | None) -> set[str]:
  """Parses a config argument string such as 'runlocal' or 'runlocal,quadratic'."""
  words = {w.strip() for w in (arg or "").split(",") if w.strip()}
  unknown = words - {"runlocal", "quadratic", "paper_shape"}
  if unknown:
    raise ValueError(
        f"unknown config argument(s) {sorted(unknown)}; allowed: runlocal, quadratic, "
        f"paper_shape")
  if "paper_shape" in words and words - {"paper_shape"}:
    raise ValueError(f"config arguments {sorted(words)}: paper_shape stands alone")
  return words


def finish(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the config arguments common to every algorithm file."""
  words = parse_args(arg)
  if "paper_shape" in words:
    shrink_to_paper_shape(c)
  if "runlocal" in words or "quadratic" in words:
    shrink_to_runlocal(c)
  if "quadratic" in words:
    c.problem = "quadratic"
  return c
