"""halos_jax: HALoS and its baselines, the JAX way."""
