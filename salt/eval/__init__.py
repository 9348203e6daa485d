"""Frozen evaluation of encoders: one package, a module per job.

- :mod:`salt.eval.distill`   - the held-out distillation loss of a checkpoint
  (``salt eval distill``);
- :mod:`salt.eval.tokens`    - the one frozen-token encoder: batches of clips through the
  frozen encoder, tokens kept in memory (whole or mean-pooled) or streamed again each epoch;
- :mod:`salt.eval.heads`     - the probes: the attentive probe (V-JEPA's: a query
  cross-attending over the tokens, an optional MLP block, a linear head), the linear probe,
  ZCA whitening, and full-batch fitting;
- :mod:`salt.eval.stats`     - standard errors over seeds and over clips, paired gaps, ranks;
- :mod:`salt.eval.report`    - the text tables every report prints;
- :mod:`salt.eval.temporal`  - the temporal probe suite (``salt eval probes``);
- :mod:`salt.eval.classify`  - V-JEPA's frozen evaluation on labelled clips
  (``salt eval classify``);
- :mod:`salt.eval.curve`     - held-out loss and probe top-1 over a run's checkpoints
  (``salt eval curve``);
- :mod:`salt.eval.baseline`  - the untrained encoder every number is compared with.

Clips come only from the data layer: :mod:`salt.data`'s sources and, for the temporal
tasks' variants of a clip, :mod:`salt.clipspec`.
"""
