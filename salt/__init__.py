"""salt-vla: train video encoders for VLA policies with frozen-teacher latent prediction."""

__version__ = "0.1.0"

__all__ = ["VideoEncoder", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import salt` (the CLI, plugins) does not import torch until it is needed.
    if name == "VideoEncoder":
        from salt.encoder import VideoEncoder

        return VideoEncoder
    raise AttributeError(f"module 'salt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
