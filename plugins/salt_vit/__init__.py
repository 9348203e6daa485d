"""Built-in plugin: video ViT students (tiny -> giant) and the transformer predictor."""

from __future__ import annotations

from functools import partial

from salt.hookspecs import hookimpl
from salt_vit.predictor import TransformerPredictor
from salt_vit.vit import VARIANTS, Variant, VideoViT, create_vit

__all__ = ["VideoViT", "TransformerPredictor", "create_vit"]


def _student_factory(variant: Variant, arg: str | None, **kwargs) -> VideoViT:
    if arg:
        raise ValueError(f"student {variant.name!r} takes no argument, got {variant.name}:{arg}")
    return variant.build(**kwargs)


def _predictor_factory(arg: str | None, **kwargs) -> TransformerPredictor:
    if arg:
        raise ValueError(f"predictor 'transformer' takes no argument, got transformer:{arg}")
    return TransformerPredictor(**kwargs)


@hookimpl
def register_students(register):
    for v in VARIANTS.values():
        register(v.name, partial(_student_factory, v), v.describe(), aliases=v.aliases)


@hookimpl
def register_predictors(register):
    register(
        "transformer",
        _predictor_factory,
        "ViT predictor on context + mask tokens at target positions",
    )
