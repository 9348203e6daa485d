"""Run in a fresh process by test_memory.py: the memory plan of a config, then its peak
resident memory over a short CPU run (checkpoint writes left out: they are not the step)."""

import json
import os
import resource
import sys

import numpy as np
import torch

import salt.train
from salt.config import build_config
from salt.masking import sample_keys
from salt.memory import plan_memory
from salt.models import SaltModel, masker_of, predictor_of, student_of, teacher_of


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(overrides: str) -> None:
    cfg = build_config(overrides=json.loads(overrides))
    teacher = teacher_of(cfg)
    with torch.device("meta"):
        student = student_of(cfg)
        model = SaltModel(student, predictor_of(cfg, student.embed_dim, teacher.teacher_dim))
    masks = masker_of(cfg)(sample_keys(cfg.train.seed, 0, np.arange(cfg.train.batch_size)))
    plan = plan_memory(cfg, model, masks, teacher, cached=False)
    salt.train.save_checkpoint = lambda *args, **kwargs: None
    before = resident()
    salt.train.train(cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"planned": plan.total(), "measured": peak - before}))


if __name__ == "__main__":
    main(sys.argv[1])
