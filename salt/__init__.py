"""salt-vla: train video encoders for VLA policies with frozen-teacher latent prediction."""

__version__ = "0.1.0"
