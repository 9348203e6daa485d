"""Run by torchrun in test_train.py: train on every rank, then save each rank's parameters."""

import sys
from pathlib import Path

from safetensors.torch import save_file

from salt.config import from_dict, load_file
from salt.models import SaltModel, predictor_of, student_of, teacher_of
from salt.train import train


def main(config_path: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    cfg = from_dict(load_file(config_path))
    result = train(cfg)
    rank = dist.get_rank()
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    if rank == 0:
        torch.manual_seed(cfg.train.seed)
        teacher_of(cfg)
        student = student_of(cfg)
        predictor = predictor_of(cfg, student.embed_dim, 3 * 2 * 16 * 16)
        initial = SaltModel(student, predictor).state_dict()
        save_file(
            {k: v.contiguous() for k, v in initial.items()}, str(Path(out) / "initial.safetensors")
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
