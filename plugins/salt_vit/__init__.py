"""Built-in plugin: video ViT students (tiny -> giant) and the transformer predictor."""

from __future__ import annotations

from functools import partial

from salt.hookspecs import hookimpl
from salt_vit.predictor import TransformerPredictor
from salt_vit.vit import ALIASES, SIZES, VideoViT, create_vit, size_description

__all__ = ["VideoViT", "TransformerPredictor", "create_vit"]


def _student_factory(size: str, arg: str | None, **kwargs) -> VideoViT:
    if arg:
        raise ValueError(f"student {size!r} takes no argument, got {size}:{arg}")
    return create_vit(size, **kwargs)


def _predictor_factory(arg: str | None, **kwargs) -> TransformerPredictor:
    if arg:
        raise ValueError(f"predictor 'transformer' takes no argument, got transformer:{arg}")
    return TransformerPredictor(**kwargs)


@hookimpl
def register_students(register):
    for size in SIZES:
        register(
            size, partial(_student_factory, size), size_description(size), aliases=ALIASES[size]
        )


@hookimpl
def register_predictors(register):
    register(
        "transformer",
        _predictor_factory,
        "ViT predictor on context + mask tokens at target positions",
    )
