"""Ablations: compare data arms by the validation loss of small models trained on them.

``prepare`` (CPU machine: Ray, the filters) writes a small prepared folder with one token
stream per arm, the evaluation streams, the tokenizer and ``plan.json``; ``train`` (GPU
machine: only torch, numpy, pyarrow) trains every arm and seed from that folder and writes
``ablation.json`` and the report. :mod:`.train` and :mod:`.report` import nothing that the
GPU machine lacks.
"""
