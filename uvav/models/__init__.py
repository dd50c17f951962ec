"""The model code: encoders, fusion, prompts, the classifier, CAV-MAE checkpoint import, pretraining heads."""

# Bump whenever a change to the model code changes what a model computes from the same weights: FT-model and job
# keys carry it, so models cached by older code are retrained, never mixed into new tables.
# 1: until 2026-12 (timm's Block defaults: LayerNorm eps 1e-6 from timm 1.0.16 on, 1e-5 before).
# 2: every block's LayerNorm pinned to torch's eps 1e-5, CAV-MAE's, whatever timm is installed.
MODEL_VERSION = 2
