"""Pythia (GPT-NeoX) model configurations, named sizes and parameter arithmetic.

Pure Python: nothing here imports JAX, so the schedule side and config files can ask for a
model's size (e.g. to model communication time as bytes / bandwidth) without starting JAX.

References:
  Biderman et al., "Pythia: A Suite for Analyzing Large Language Models Across Training and
  Scaling", ICML 2023 (sizes, vocabulary 50,304, rotary on 25% of each head).
  Black et al., "GPT-NeoX-20B: An Open-Source Autoregressive Language Model", 2022 (the
  architecture: parallel attention + MLP residual, rotary embeddings, "small_init"/"wang_init").
"""
import dataclasses
import math

COMPUTE_DTYPES = ("float32", "bfloat16")
PARAM_DTYPES = ("float32",)
# Activation rematerialisation: 'none' keeps every block's activations for the backward pass,
# 'block' keeps only each block's input and recomputes the rest (jax.checkpoint per block).
REMAT_POLICIES = ("none", "block")


@dataclasses.dataclass(frozen=True)
class PythiaConfig:
  """Shape and numerics of a GPT-NeoX (Pythia) decoder.

  Every block is `x + attn(ln1(x)) + mlp(ln2(x))` (parallel residual, pre-LayerNorm); rotary
  position embeddings on the first `rotary_ndims` dims of each head; exact (erf) GELU MLP of
  width `mlp_ratio * d_model`; untied input embedding and output head; biases everywhere except
  the head.

  Initialisation (see docs/models.md): every weight matrix that reads the residual stream
  (embed_in, attention.qkv, mlp.dense_h_to_4h, embed_out) ~ N(0, init_std^2); the two matrices
  that write back into it (attention.dense, mlp.dense_4h_to_h) ~ N(0, (2 / (num_layers *
  sqrt(d_model)))^2), GPT-NeoX's "wang_init"; biases 0; LayerNorm scale 1, bias 0.
  GPT-NeoX's "small_init" for the first group is init_std = sqrt(2 / (5 * d_model)); pass it as
  an override to reproduce Pythia's recipe exactly (0.02 is Hugging Face's initializer_range and
  within 1% of small_init at d_model = 1024).
  """
  vocab_size: int  # V, tokens (Pythia pads 50,277 to 50,304 = 393 * 128)
  d_model: int  # D, residual stream width
  num_layers: int  # L, transformer blocks
  num_heads: int  # H, attention heads; head_dim = D / H
  max_seq_len: int  # longest input sequence (Hugging Face's max_position_embeddings)
  rotary_pct: float = 0.25  # fraction of each head's dims that are rotated
  rotary_base: float = 10000.0  # rotary frequency base theta
  layer_norm_eps: float = 1e-5  # epsilon added to the variance in every LayerNorm
  mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * D
  compute_dtype: str = "float32"  # matmul dtype: 'float32' | 'bfloat16' (params stay fp32)
  param_dtype: str = "float32"  # storage dtype of parameters (fp32 only)
  init_std: float = 0.02  # std of the normal init of matrices reading the residual stream
  remat: str = "none"  # 'none' | 'block' (REMAT_POLICIES)

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "max_seq_len", "mlp_ratio"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"PythiaConfig.{name} must be a positive int, got {value!r}")
    if self.d_model % self.num_heads:
      raise ValueError(
          f"PythiaConfig.d_model={self.d_model} must be divisible by num_heads={self.num_heads}"
      )
    if (not isinstance(self.rotary_pct, (int, float)) or isinstance(self.rotary_pct, bool)
        or not 0.0 <= self.rotary_pct <= 1.0):
      raise ValueError(f"PythiaConfig.rotary_pct must be in [0, 1], got {self.rotary_pct!r}")
    if self.rotary_ndims % 2:
      raise ValueError(
          f"PythiaConfig.rotary_pct={self.rotary_pct} gives rotary_ndims="
          f"int(head_dim * rotary_pct)={self.rotary_ndims} for head_dim={self.head_dim}; "
          "rotary dims are rotated in pairs, so it must be even"
      )
    for name in ("rotary_base", "layer_norm_eps", "init_std"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"PythiaConfig.{name} must be a positive number, got {value!r}")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(
          f"PythiaConfig.compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
      )
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"PythiaConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    if self.param_dtype not in PARAM_DTYPES:
      raise ValueError(
          f"PythiaConfig.param_dtype must be one of {PARAM_DTYPES} (optimizer and replay "
          f"arithmetic assume fp32 parameters), got {self.param_dtype!r}"
      )

  @property
  def head_dim(self) -> int:
    """Width of one attention head, D / H."""
    return self.d_model // self.num_heads

  @property
  def rotary_ndims(self) -> int:
    """Rotated dims per head, int(head_dim * rotary_pct) as in GPT-NeoX / transformers."""
    return int(self.head_dim * self.rotary_pct)

  @property
  def mlp_dim(self) -> int:
    """MLP hidden width F = mlp_ratio * D."""
    return self.mlp_ratio * self.d_model

  @property
  def wang_init_std(self) -> float:
    """Std of the residual-branch output matrices: 2 / (L * sqrt(D)) (GPT-NeoX "wang_init")."""
    return 2.0 / (self.num_layers * math.sqrt(self.d_model))


_PYTHIA_VOCAB = 50304
_PYTHIA_SEQ = 2048

# name -> (vocab_size, d_model, num_layers, num_heads, max_seq_len)
_NAMED_SIZES = {
    # Tests and the default run: byte-level vocabulary.
    "tiny": (256, 128, 2, 4, 256),
    # The paper-shaped comparison (98,304 local steps on 2 CPU cores): byte-level, 64 tokens.
    "micro": (256, 64, 2, 2, 64),
    # Pythia suite (docs/algorithms.md 5; Biderman et al. 2023, Table 1).
    "pythia-14m": (_PYTHIA_VOCAB, 128, 6, 4, _PYTHIA_SEQ),
    "pythia-70m": (_PYTHIA_VOCAB, 512, 6, 8, _PYTHIA_SEQ),
    "pythia-160m": (_PYTHIA_VOCAB, 768, 12, 12, _PYTHIA_SEQ),
    "pythia-410m": (_PYTHIA_VOCAB, 1024, 24, 16, _PYTHIA_SEQ),
    "pythia-1b": (_PYTHIA_VOCAB, 2048, 16, 8, _PYTHIA_SEQ),
}
MODEL_NAMES = tuple(_NAMED_SIZES)


def get_model_config(name: str, **overrides) -> PythiaConfig:
  """Returns the named configuration, with optional field overrides.

  Args:
    name: one of MODEL_NAMES: 'tiny', 'pythia-14m', 'pythia-70m', 'pythia-160m',
      'pythia-410m', 'pythia-1b'.
    **overrides: PythiaConfig fields to replace, e.g. compute_dtype='bfloat16'.

  Returns:
    A validated PythiaConfig.
  """
  if name not in _NAMED_SIZES:
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  fields = {f.name for f in dataclasses.fields(PythiaConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
        f"unknown PythiaConfig field(s) {unknown} in overrides for {name!r}; "
        f"valid fields: {', '.join(sorted(fields))}"
    )
  vocab_size, d_model, num_layers, num_heads, max_seq_len = _NAMED_SIZES[name]
  kwargs = dict(
      vocab_size=vocab_size,
      d_model=d_model,
      num_layers=num_layers,
      num_heads=num_heads,
      max_seq_len=max_seq_len,
  )
  kwargs.update(overrides)
  return PythiaConfig(**kwargs)


def param_count(cfg: PythiaConfig) -> int:
  """Number of parameters, by arithmetic on the shapes (no JAX).

  Per block: two LayerNorms (4D), fused qkv (3D^2 + 3D), attention output (D^2 + D), MLP
  (DF + F + FD + D) with F = mlp_ratio * D; plus embedding (VD), final LayerNorm (2D) and the
  untied head (DV, no bias). With F = 4D: L (12 D^2 + 13 D) + 2 V D + 2 D.

  Args:
    cfg: the model configuration.

  Returns:
    The exact parameter count (70,426,624 for pythia-70m).
  """
  D, F, V, L = cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.num_layers
  layer_norms = 2 * (2 * D)
  attention = (D * 3 * D + 3 * D) + (D * D + D)
  mlp = (D * F + F) + (F * D + D)
  per_layer = layer_norms + attention + mlp
  return L * per_layer + V * D + 2 * D + D * V


def param_bytes(cfg: PythiaConfig) -> int:
  """Bytes of one copy of the parameters in fp32 (4 * param_count)."""
  return 4 * param_count(cfg)
