"""Loading VideoMAE checkpoints strictly, from the layouts they are published in.

Supported:

- **Hugging Face** ``transformers`` directories: ``config.json`` (``model_type`` "videomae")
  plus ``model.safetensors``, ``pytorch_model.bin`` or a sharded index of either. The state
  dict may be a ``VideoMAEModel``, or a ``VideoMAEForPreTraining`` /
  ``VideoMAEForVideoClassification`` whose encoder sits under ``videomae.``. Attention biases
  may be stored as ``q_bias``/``v_bias`` (the files on the Hub, and what ``save_pretrained``
  writes) or as ``query.bias``/``value.bias`` (transformers 5 in memory).
- **Original** VideoMAE (v1) and VideoMAEv2 state dicts (``patch_embed.proj``,
  ``blocks.N.attn.qkv`` with ``q_bias``/``v_bias``, optional ``gamma_1``/``gamma_2``), as a
  ``.pth`` file (possibly under ``model``/``module``/``state_dict``, keys possibly prefixed
  with ``encoder.`` as in pretraining checkpoints) whose architecture is inferred from tensor
  shapes, or in a directory whose ``config.json`` holds a VideoMAEv2 ``model_config`` (the
  OpenGVLab Hub layout, encoder under ``model.``).

Pickled files are only read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

import torch

from salt.io import read_json, read_safetensors, torch_load
from salt_videomae.encoder import VideoMAEArch, VideoMAEEncoder, default_num_heads

logger = logging.getLogger(__name__)

# Tried in this order: safetensors first, pickles last.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# Keys that a pretraining or finetuning checkpoint legitimately holds besides the encoder,
# matched after the encoder's prefix is removed ("x." matches the subtree, "x" the key).
HF_IGNORED = (
    "decoder.",  # VideoMAEForPreTraining: pixel decoder
    "encoder_to_decoder.",
    "mask_token",
    "fc_norm.",  # VideoMAEForVideoClassification: norm of the pooled features
    "classifier.",
)
ORIGINAL_IGNORED = (
    "decoder.",  # PretrainVisionTransformer: pixel decoder
    "encoder_to_decoder.",
    "mask_token",
    "head.",  # finetuned classifier (and the pretraining encoder's head, Identity in practice)
    "fc_norm.",  # norm of the mean-pooled features (use_mean_pooling)
)

_HF_EMBED = "embeddings.patch_embeddings.projection.weight"
_ORIGINAL_EMBED = "patch_embed.proj.weight"

# Canonical (original) names -> Hugging Face names, inside one block / at the top.
_HF_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_HF_TOP = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}
_HF_QV_BIAS = {
    "q_bias": {"attn.q_bias": "q_bias", "attn.v_bias": "v_bias"},
    "query.bias": {"attn.q_bias": "query.bias", "attn.v_bias": "value.bias"},
}


def load_encoder(path: str | Path, num_frames: int, image_size: int) -> VideoMAEEncoder:
    """A VideoMAE encoder with every weight from ``path`` (a directory or a checkpoint file).

    ``num_frames`` and ``image_size`` set the clip geometry of a bare original checkpoint,
    which does not record it; a ``config.json`` always wins.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"VideoMAE checkpoint {str(path)!r} does not exist; expected a Hugging Face "
            f"directory (config.json + model.safetensors or pytorch_model.bin) or an original "
            f"VideoMAE .pth file"
        )
    if path.is_dir():
        config_file, weights = path / "config.json", _weights_in(path)
        if not config_file.is_file() or weights is None:
            found = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
            raise FileNotFoundError(
                f"VideoMAE directory {str(path)!r} needs config.json and one of "
                f"{', '.join(WEIGHT_FILES)}; it holds: {found}"
            )
        config = _read_json(config_file)
        state = read_state_dict(weights)
        if isinstance(config.get("model_config"), dict):  # VideoMAEv2 on the Hub
            return _build_original(state, weights, num_frames, image_size, config["model_config"])
        return _build_hf(state, weights, config, config_file)

    state = read_state_dict(path)
    if _prefix_of(state, _HF_EMBED) is not None:
        raise ValueError(
            f"{str(path)!r} is a Hugging Face VideoMAE state dict; pass the directory that "
            f"also holds its config.json"
        )
    return _build_original(state, path, num_frames, image_size, None)


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors file, a (sharded) index, or a weights-only pickle."""
    if file.name.endswith(".index.json"):
        shards = sorted(set(_read_json(file).get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{str(file)!r} has no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(file.parent / shard))
        return state
    if file.suffix == ".safetensors":
        return read_safetensors(file)
    # Training checkpoints also pickle their argparse options next to the weights.
    return _unwrap(torch_load(file, safe_globals=(argparse.Namespace,)), file)


def _unwrap(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{str(file)!r} holds no state dict (got {type(obj).__name__})")
    odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(
            f"{str(file)!r} is not a state dict of tensors; non-tensor entries: {_listing(odd)}"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _weights_in(directory: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _read_json(file: Path) -> dict:
    data = read_json(file)
    if not isinstance(data, dict):
        raise ValueError(f"{str(file)!r} must hold a JSON object")
    return data


def _prefix_of(state: dict[str, torch.Tensor], suffix: str) -> str | None:
    """What precedes ``suffix`` in the key that ends with it (the encoder's prefix)."""
    for key in state:
        if key == suffix or key.endswith("." + suffix):
            return key[: len(key) - len(suffix)]
    return None


def _split(
    state: dict[str, torch.Tensor], prefix: str, ignored: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Encoder tensors by name without ``prefix``; and the other keys that are not ignorable."""
    inside: dict[str, torch.Tensor] = {}
    stray: list[str] = []
    for key, value in state.items():
        local = key[len(prefix) :] if key.startswith(prefix) else key
        if any(local == p or (p.endswith(".") and local.startswith(p)) for p in ignored):
            continue
        if key.startswith(prefix):
            inside[local] = value
        else:
            stray.append(key)
    return inside, stray


def _build_hf(
    state: dict[str, torch.Tensor], file: Path, config: dict, config_file: Path
) -> VideoMAEEncoder:
    model_type = config.get("model_type", "videomae")
    if model_type != "videomae":
        raise ValueError(
            f"{str(config_file)!r} describes a {model_type!r} model, not a VideoMAE ('videomae')"
        )
    # Absent keys take VideoMAEConfig's defaults, as transformers would.
    get = config.get
    try:
        arch = VideoMAEArch(
            num_frames=get("num_frames", 16),
            image_size=get("image_size", 224),
            patch_size=get("patch_size", 16),
            tubelet_size=get("tubelet_size", 2),
            in_chans=get("num_channels", 3),
            embed_dim=get("hidden_size", 768),
            depth=get("num_hidden_layers", 12),
            num_heads=get("num_attention_heads", 12),
            mlp_dim=get("intermediate_size", 3072),
            qkv_bias=bool(get("qv_bias", get("qkv_bias", True))),  # renamed in transformers 5
            layer_norm_eps=float(get("layer_norm_eps", 1e-12)),
            # VideoMAEModel ends with `layernorm` only when it does not mean-pool.
            final_norm=not get("use_mean_pooling", True),
            hidden_act=get("hidden_act", "gelu"),
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"{str(config_file)!r}: {err}") from None

    prefix = _prefix_of(state, _HF_EMBED)
    if prefix is None:
        raise ValueError(
            f"{str(file)!r} is not a Hugging Face VideoMAE state dict: no {_HF_EMBED!r} key "
            f"(keys start: {_listing(list(state))})"
        )
    inside, stray = _split(state, prefix, HF_IGNORED)
    style = (
        "query.bias"
        if any(k.endswith("attention.attention.query.bias") for k in inside)
        else "q_bias"
    )

    def names(key: str) -> list[str]:
        return _hf_names(key, style)

    return _load(inside, stray, prefix, names, arch, file, "Hugging Face")


def _hf_names(key: str, style: str) -> list[str]:
    """The Hugging Face key(s) holding canonical ``key`` (qkv is stored as three weights)."""
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if match is None:
        module, _, leaf = key.rpartition(".")
        return [f"{_HF_TOP[module]}.{leaf}"]
    layer, rest = f"encoder.layer.{match[1]}", match[2]
    if rest == "attn.qkv.weight":
        return [f"{layer}.attention.attention.{p}.weight" for p in ("query", "key", "value")]
    if rest in _HF_QV_BIAS[style]:
        return [f"{layer}.attention.attention.{_HF_QV_BIAS[style][rest]}"]
    module, _, leaf = rest.rpartition(".")
    return [f"{layer}.{_HF_BLOCK[module]}.{leaf}"]


def _build_original(
    state: dict[str, torch.Tensor],
    file: Path,
    num_frames: int,
    image_size: int,
    model_config: dict | None,
) -> VideoMAEEncoder:
    prefix = _prefix_of(state, _ORIGINAL_EMBED)
    if prefix is None:
        raise ValueError(
            f"{str(file)!r} is not a VideoMAE checkpoint: no {_ORIGINAL_EMBED!r} key (nor a "
            f"Hugging Face {_HF_EMBED!r}); keys start: {_listing(list(state))}"
        )
    inside, stray = _split(state, prefix, ORIGINAL_IGNORED)
    arch = _infer_original_arch(inside, file, num_frames, image_size, model_config or {})
    return _load(inside, stray, prefix, lambda key: [key], arch, file, "original VideoMAE")


def _infer_original_arch(
    inside: dict[str, torch.Tensor], file: Path, num_frames: int, image_size: int, mc: dict
) -> VideoMAEArch:
    """Shapes give the widths and depth; a v2 ``model_config``, when present, wins."""
    if any(re.fullmatch(r"blocks\.\d+\.attn\.scale", k) for k in inside) or mc.get("cos_attn"):
        raise ValueError(
            f"{str(file)!r} uses VideoMAEv2 cosine attention (attn.scale), which the videomae "
            f"teacher does not implement"
        )
    dim, chans, tubelet, ph, pw = inside[_ORIGINAL_EMBED].shape
    blocks = {int(m[1]) for k in inside if (m := re.match(r"blocks\.(\d+)\.", k))}
    fc1 = inside.get("blocks.0.mlp.fc1.weight")
    if not blocks or fc1 is None:
        raise ValueError(f"{str(file)!r} has a patch embedding but no blocks.0.mlp.fc1.weight")
    try:
        if "mlp_ratio" in mc:
            mlp_dim = int(mc.get("embed_dim", dim) * mc["mlp_ratio"])
        else:
            mlp_dim = fc1.shape[0]
        if "use_mean_pooling" in mc:
            final_norm = not mc["use_mean_pooling"]
        else:
            final_norm = "norm.weight" in inside
        if "init_values" in mc:
            layer_scale = (mc["init_values"] or 0) > 0
        else:
            layer_scale = "blocks.0.gamma_1" in inside
        return VideoMAEArch(
            num_frames=mc.get("num_frames", mc.get("all_frames", num_frames)),
            image_size=mc.get("img_size", image_size),
            patch_size=mc.get("patch_size", (ph, pw)),
            tubelet_size=mc.get("tubelet_size", tubelet),
            in_chans=mc.get("in_chans", chans),
            embed_dim=mc.get("embed_dim", dim),
            depth=mc.get("depth", max(blocks) + 1),
            num_heads=mc.get("num_heads") or default_num_heads(mc.get("embed_dim", dim)),
            mlp_dim=mlp_dim,
            qkv_bias=bool(mc.get("qkv_bias", "blocks.0.attn.q_bias" in inside)),
            layer_norm_eps=float(mc.get("layer_norm_eps", 1e-6)),  # original: LayerNorm(eps=1e-6)
            final_norm=final_norm,
            layer_scale=layer_scale,
            learned_pos=bool(mc.get("use_learnable_pos_emb", "pos_embed" in inside)),
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"{str(file)!r}: {err}") from None


def _load(
    inside: dict[str, torch.Tensor],
    stray: list[str],
    prefix: str,
    names,
    arch: VideoMAEArch,
    file: Path,
    layout: str,
) -> VideoMAEEncoder:
    """Build the encoder for ``arch`` and fill it, failing on any missing or unexpected key."""
    with torch.device("meta"):  # no time spent initializing weights that are overwritten
        encoder = VideoMAEEncoder(arch)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    wanted = {key: names(key) for key in shapes}
    expected = {name for group in wanted.values() for name in group}
    missing = sorted(prefix + n for n in expected - set(inside))
    unexpected = sorted(stray + [prefix + k for k in set(inside) - expected])
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise ValueError(
            f"{str(file)!r} does not match the {layout} encoder it describes "
            f"({arch.depth} blocks, width {arch.embed_dim}): {'; '.join(parts)}"
        )

    weights = {}
    for key, group in wanted.items():
        tensors = [inside[n] for n in group]
        weights[key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
    wrong = [
        f"{prefix}{'+'.join(wanted[k])}: {tuple(v.shape)} in the file, {shapes[k]} expected"
        for k, v in weights.items()
        if tuple(v.shape) != shapes[k]
    ]
    if wrong:
        raise ValueError(
            f"{str(file)!r} has tensors of the wrong shape for a {arch.num_frames}x"
            f"{arch.image_size[0]}x{arch.image_size[1]} clip at width {arch.embed_dim} with "
            f"{arch.num_heads} heads: {_listing(wrong)}"
        )
    encoder = encoder.to_empty(device="cpu")
    encoder.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    encoder.fill_position_table()
    logger.info(
        "VideoMAE %s checkpoint %s: %d blocks, width %d, %d heads, grid %s",
        layout,
        file,
        arch.depth,
        arch.embed_dim,
        arch.num_heads,
        arch.grid,
    )
    return encoder


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
