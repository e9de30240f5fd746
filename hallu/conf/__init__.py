"""hallu's packaged Hydra configs (found as pkg://hallu.conf); data only, no code."""
