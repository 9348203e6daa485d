"""The one frozen-token encoder of the evaluations, and the two ways its tokens are kept.

:class:`FrozenEncoder` runs batches of a dataset's clips (any data-layer source: the
built-in data, videos, :class:`salt.clipspec.SpecClips`) through a frozen encoder under
inference mode, normalized with the encoder's training mean and std. Its tokens are

- kept per dataset, whole in fp16 or streamed again each epoch when they would not fit
  (:class:`Tokens`, what ``salt eval classify`` trains its probes on), or
- kept per clip spec, whole or mean-pooled, so a clip several temporal tasks share is
  encoded once (:class:`SpecTokens`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from salt.batch import collate
from salt.clipspec import ClipSpec, SpecClips
from salt.data import KeyedDataset, normalize_clips

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class FrozenEncoder:
    """Clips -> patch tokens ``[B, N, D]`` with a frozen encoder, batch by batch."""

    def __init__(self, encoder: nn.Module, mean, std, batch_size: int, workers: int = 0):
        self.encoder, self.mean, self.std = encoder, tuple(mean), tuple(std)
        self.batch_size, self.workers = batch_size, workers
        param = next(iter(encoder.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        floating = param is not None and param.is_floating_point()
        self.dtype = param.dtype if floating else torch.float32

    def batches(
        self,
        dataset: Dataset,
        keys: Sequence[tuple[int, int]],
        batch_size: int | None = None,
        progress: Progress | None = None,
        stage: str = "",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(tokens ``[B, N, D]`` on the encoder's device, labels ``[B]``, clip ids ``[B]``)
        for the ``(epoch, index)`` keys, in their order; unreadable clips are skipped with
        a warning."""
        loader = DataLoader(
            KeyedDataset(dataset),
            batch_size=batch_size or self.batch_size,
            sampler=list(keys),
            collate_fn=collate,
            num_workers=self.workers,
        )
        done = 0
        for batch in loader:
            for message in batch.errors:
                log.warning("skipped an unreadable clip: %s", message)
            if not batch.size:
                continue
            x = normalize_clips(batch.video.to(self.device), self.mean, self.std)
            with torch.inference_mode():
                tokens = self.encoder(x.to(self.dtype))
            if tokens.ndim != 3:
                raise ValueError(
                    f"the encoder returned shape {tuple(tokens.shape)}; evaluation needs "
                    f"patch tokens [B, N, D]"
                )
            done += batch.size
            if progress is not None:
                progress(stage, done, len(keys))
            yield tokens, batch.labels, batch.indices


class Tokens:
    """Patch tokens of a dataset's clips: kept in memory as fp16 (``cached``) or computed by
    the frozen encoder whenever asked (``live``)."""

    def __init__(
        self,
        encoder: FrozenEncoder,
        dataset: Dataset,
        *,
        cached: bool,
        stage: str,
        progress: Progress | None = None,
    ):
        self.encoder, self.dataset, self.stage, self.progress = encoder, dataset, stage, progress
        self.store: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.seconds = 0.0
        if cached:
            encoded = list(self._encode(shuffle_seed=None))  # (tokens, labels, ids) batches
            self.store = tuple(torch.cat(parts) for parts in zip(*encoded, strict=True))

    def _encode(
        self, shuffle_seed: int | None, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches of (tokens fp16 [B, N, D], labels [B], clip ids [B])."""
        started = time.perf_counter()
        keys = _keys(len(self.dataset), shuffle_seed)
        for tokens, labels, ids in self.encoder.batches(
            self.dataset, keys, batch_size, self.progress, self.stage
        ):
            yield tokens.to(torch.float16).cpu(), labels, ids
        self.seconds += time.perf_counter() - started

    def batches(
        self, size: int, seed: int | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Shuffled (``seed``) or in-order batches of (tokens, labels, clip ids)."""
        if self.store is None:  # live: the same batches the stored tokens would give
            yield from self._encode(seed, size)
            return
        tokens, labels, ids = self.store
        order = torch.arange(len(labels))
        if seed is not None:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        for i in range(0, len(order), size):
            chunk = order[i : i + size]
            yield tokens[chunk], labels[chunk], ids[chunk]


def _keys(n: int, epoch: int | None) -> list[tuple[int, int]]:
    """In order as epoch 0, or shuffled for ``epoch`` (whose random training views differ)."""
    if epoch is None:
        return [(0, i) for i in range(n)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
    return [(epoch, i) for i in order]


class SpecTokens:
    """Tokens of clip specs rendered from one source, each spec encoded once: mean-pooled
    features ``[D]`` and, with ``keep_tokens``, the tokens ``[N, D]`` (fp32)."""

    def __init__(self, encoder: FrozenEncoder, source, num_frames: int, keep_tokens: bool):
        self.encoder, self.source, self.num_frames = encoder, source, num_frames
        self.keep_tokens = keep_tokens
        self.pooled: dict[ClipSpec, torch.Tensor] = {}
        self.tokens: dict[ClipSpec, torch.Tensor] = {}

    def encode(self, specs: Sequence[ClipSpec], task: str = "", progress: Progress | None = None):
        """Encode the specs not seen yet."""
        todo = list(dict.fromkeys(s for s in specs if s not in self.pooled))
        todo.sort(key=lambda s: s.video)  # consecutive clips of a video share its reader
        if not todo and progress is not None:
            progress(task, 0, 0)
        clips = SpecClips(self.source, todo, self.num_frames)
        keys = [(0, i) for i in range(len(todo))]
        for tokens, _, ids in self.encoder.batches(clips, keys, progress=progress, stage=task):
            tokens = tokens.float().cpu()
            for j, index in enumerate(ids.tolist()):
                spec = todo[index]
                self.pooled[spec] = tokens[j].mean(0)
                if self.keep_tokens:
                    self.tokens[spec] = tokens[j].clone()

    def features(self, specs: Sequence[ClipSpec]) -> torch.Tensor:
        """Mean-pooled features ``[n, D]``."""
        return torch.stack([self.pooled[s] for s in specs])

    def token_sets(self, specs: Sequence[ClipSpec]) -> torch.Tensor:
        """Tokens ``[n, N, D]``."""
        return torch.stack([self.tokens[s] for s in specs])
