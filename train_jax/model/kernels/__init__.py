"""How the model's hand-tuned ops run: one backend per platform, each tested against `reference`.

`backend.py` is the one place the choice is made (`resolve_backend`, `kernel_ops`); `names.py`
lists the names a config may use. Nothing is imported here, so that naming a backend does not
load every backend (the TPU one imports Pallas).
"""
