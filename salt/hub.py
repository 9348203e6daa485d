"""The Hugging Face Hub convention for exported encoders: load by repo id, a model card with
every export, and ``push_to_hub``.

Loading goes through ``huggingface_hub``, so its cache (``HF_HUB_CACHE``), offline mode
(``HF_HUB_OFFLINE=1``: the cache only, no network) and tokens apply as for any Hub model.
Only ``config.json``, ``model.safetensors`` and ``README.md`` are fetched: an export holds
nothing that could run code. Without a network (or behind a proxy that cannot reach the
Hub), a lookup fails in about
:data:`PROBE_TIMEOUT_S` seconds (or loads the cached copy) instead of retrying for half a
minute.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

from salt import __version__

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILES = ("config.json", "model.safetensors")
CARD = "README.md"
# First folders of the relative paths salt's guides write to: ``runs/typo`` is a run that
# is not there, never the Hub repo of a user called "runs".
LOCAL_FOLDERS = ("runs", "encoders", "exports", "caches", "checkpoints")
# A name ending like a weights or config file is a file, whatever else it looks like.
FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json")
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
PROBE_TIMEOUT_S = 2.0  # how long the Hub (or its proxy) gets to accept a connection


def looks_like_path(text: str | Path) -> bool:
    """Whether ``text`` names a local file or folder, never a Hub repo: it starts with
    ``./``, ``../``, ``/``, ``~`` or a Windows drive (``C:\\``, ``C:/``), holds a backslash,
    has no ``/`` or more than one, has a ``.`` or ``..`` part, ends in a weights or config
    suffix (``.safetensors``, ``.pt``, ``.json``, ...), exists, or its first part is a local
    folder or one salt's guides use (``runs/``, ``encoders/``, ``exports/``, ``caches/``,
    ``checkpoints/``)."""
    text = str(text)
    first = text.split("/", 1)[0]
    return (
        text.startswith(("./", "../", "/", "~"))
        or bool(WINDOWS_DRIVE.match(text))
        or "\\" in text
        or text.count("/") != 1
        or any(part in (".", "..") for part in text.split("/"))
        or text.lower().endswith(FILE_SUFFIXES)
        or first in LOCAL_FOLDERS
        or Path(first).is_dir()
        or Path(text).exists()
    )


def is_repo_id(text: str | Path) -> bool:
    """``org/name`` that is not a local path (see :func:`looks_like_path`): what
    ``from_pretrained`` fetches from the Hub."""
    return bool(REPO_ID.match(str(text))) and not looks_like_path(text)


def download(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local folder (in the Hub cache, or ``cache_dir``) holding ``repo_id``'s export at
    ``revision``; ``local_files_only`` never asks the network, ``token`` reads a private
    repo (as ``hf_hub_download`` takes them).

    When the Hub cannot be reached (checked first, in :data:`PROBE_TIMEOUT_S` seconds), a
    copy in the cache is used, and without one this is a one-line error at once."""
    from huggingface_hub import constants, hf_hub_download

    if local_files_only:
        folder = cached_copy(repo_id, revision, cache_dir)
        if folder is None:
            raise FileNotFoundError(
                f"could not load {repo_id!r} with local_files_only: the Hub cache "
                f"({cache_dir or constants.HF_HUB_CACHE}) has no copy; fetch it once while "
                f"online (`hf download {repo_id}`), or give a local export folder"
            )
        return folder
    if not constants.is_offline_mode():
        host, port, what = hub_address()
        if not hub_reachable():
            where = (
                f"the Hub cannot be reached through the proxy {host}:{port}"
                if what == "the proxy"
                else f"{what} {host}:{port} cannot be reached"
            )
            folder = cached_copy(repo_id, revision, cache_dir)
            if folder is None:
                raise FileNotFoundError(
                    f"could not load {repo_id!r} from the Hugging Face Hub: {where} "
                    f"(no network?) and the Hub cache "
                    f"({constants.HF_HUB_CACHE}) has no copy; to work offline, fetch it once "
                    f"while online (`hf download {repo_id}`) and set HF_HUB_OFFLINE=1, or give a "
                    f"local export folder"
                )
            log.warning("%s: loading %r from the Hub cache", where, repo_id)
            return folder
    folder = None
    try:
        for name in FILES:
            path = hf_hub_download(
                repo_id, name, revision=revision, cache_dir=cache_dir, token=token
            )
            folder = Path(path).parent
    except Exception as err:  # offline without a copy, no such repo, no access, no network
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = (
            "offline mode (HF_HUB_OFFLINE=1) and no copy in the Hub cache "
            f"({constants.HF_HUB_CACHE})"
            if constants.is_offline_mode()
            else why
        )
        raise FileNotFoundError(
            f"could not load {repo_id!r}: no such local path, and not from the Hugging Face Hub "
            f"({where}); fetch it once with `hf download {repo_id}` while online, or give a "
            f"local export directory"
        ) from None
    return folder


def cached_copy(
    repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path | None:
    """The Hub cache's folder holding ``repo_id``'s export files, or None; never the network."""
    from huggingface_hub import hf_hub_download

    try:
        paths = [
            hf_hub_download(
                repo_id, n, revision=revision, cache_dir=cache_dir, local_files_only=True
            )
            for n in FILES
        ]
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several kinds)
        return None
    return Path(paths[-1]).parent


def endpoint() -> tuple[str, int, str]:
    """``(host, port, scheme)`` of the Hub's endpoint (``HF_ENDPOINT``, default
    huggingface.co)."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    return (
        url.hostname or "huggingface.co",
        url.port or (443 if url.scheme == "https" else 80),
        url.scheme,
    )


def proxy_for_hub() -> SplitResult | None:
    """The proxy the environment sets for the endpoint (``HTTPS_PROXY``, ``ALL_PROXY``,
    unless ``NO_PROXY`` names the host), as a split URL, or None."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    host, _, scheme = endpoint()
    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or proxy_bypass(host):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def hub_address() -> tuple[str, int, str]:
    """``(host, port, what)`` a Hub request connects to first: the proxy (see
    :func:`proxy_for_hub`), else the endpoint itself."""
    host, port, _ = endpoint()
    p = proxy_for_hub()
    if p is not None:
        default = 443 if p.scheme == "https" else 1080 if p.scheme.startswith("socks") else 80
        return p.hostname or host, p.port or default, "the proxy"
    return host, port, "the Hub at"


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a Hub request could get through within ``timeout`` seconds: a TCP connection
    to the endpoint, or through an HTTP proxy, the proxy's answer to a request for the
    endpoint (a proxy that accepts connections but cannot reach the Hub answers 502 or
    504, or nothing). A SOCKS proxy is only checked for accepting connections."""
    p = proxy_for_hub()
    if p is None or p.scheme not in ("http", "https"):
        return reachable(*hub_address()[:2], timeout)
    return _answers(lambda: _ask_proxy(p, timeout), timeout)


def _ask_proxy(proxy: SplitResult, timeout: float) -> bool:
    """Ask an HTTP(S) proxy for the endpoint as a Hub request would (``CONNECT`` for an
    https endpoint, a ``HEAD`` in absolute form for plain http); True when it forwards."""
    import base64
    import ssl

    target_host, target_port, scheme = endpoint()
    port = proxy.port or (443 if proxy.scheme == "https" else 80)
    authority = f"{target_host}:{target_port}"
    if scheme == "https":
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    else:
        request = f"HEAD http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n"
    if proxy.username:
        creds = f"{proxy.username}:{proxy.password or ''}".encode()
        request += f"Proxy-Authorization: Basic {base64.b64encode(creds).decode()}\r\n"
    with socket.create_connection((proxy.hostname, port), timeout=timeout) as raw:
        conn = (
            ssl.create_default_context().wrap_socket(raw, server_hostname=proxy.hostname)
            if proxy.scheme == "https"
            else raw
        )
        conn.sendall((request + "\r\n").encode())
        status_line = conn.recv(256).split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return 0 < status < 500 if scheme != "https" else 200 <= status < 300


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, the name
    lookup included."""

    def connect() -> bool:
        socket.create_connection((host, port), timeout=timeout).close()
        return True

    return _answers(connect, timeout)


def _answers(probe: Callable[[], bool], timeout: float) -> bool:
    """``probe()``'s answer if it gives one within ``timeout`` seconds, else False; any
    error is False. It runs in a thread, as a name lookup can hang past any socket
    timeout."""
    done, yes = threading.Event(), threading.Event()

    def run() -> None:
        try:
            if probe():
                yes.set()
        except Exception:  # noqa: BLE001 - any failure means not reachable
            pass
        finally:
            done.set()

    threading.Thread(target=run, name="salt-hub-probe", daemon=True).start()
    done.wait(timeout)
    return yes.is_set()


LICENSE = "apache-2.0"  # salt-vla's own; an export may say another (salt export --license)
TAGS = ["video", "video-encoder", "vla", "robotics", "salt"]


def hub_id_in(spec: str | None) -> str | None:
    """The Hub repo id a teacher or data spec names (``videomae:org/name``,
    ``encoder:org/name``, ``lerobot:org/name``), or None for anything local or built in."""
    if not spec:
        return None
    arg = str(spec).split(":", 1)[1] if ":" in str(spec) else str(spec)
    arg = arg.split(":", 1)[0]  # lerobot:org/name:camera
    return arg if is_repo_id(arg) else None


def card_data(config: dict[str, Any], repo_id: str | None = None):
    """The card's metadata as ``huggingface_hub.ModelCardData``: license, library, pipeline
    tag, tags, the teacher as ``base_model`` and the data as ``datasets`` when they are Hub
    ids, and every recorded evaluation as a model-index entry."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type=e["task"],
            dataset_type=e.get("dataset_type", e["dataset"]),
            dataset_name=e["dataset"],
            metric_type=e["metric"],
            metric_value=e["value"],
            metric_name=e.get("name"),
        )
        for e in evaluations_of(config)
    ]
    dataset = hub_id_in(config.get("data"))
    return ModelCardData(
        license=config.get("license") or LICENSE,
        library_name="salt-vla",
        pipeline_tag="feature-extraction",
        tags=TAGS,
        base_model=hub_id_in(config.get("teacher")),
        datasets=[dataset] if dataset else None,
        model_name=repo_id or f"salt-{config['architecture']}",
        eval_results=results or None,
    )


def evaluations_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluations recorded into an export (``salt eval ... --record``)."""
    recorded = config.get("evaluations") or []
    return [e for e in recorded if isinstance(e, dict)]


def model_card(
    config: dict[str, Any], repo_id: str | None = None, folder: str | None = None
) -> str:
    """``README.md`` for an export (a ``huggingface_hub.ModelCard``): metadata for the Hub,
    what the encoder is, its geometry, how it was trained and evaluated, and how to load it -
    from ``repo_id`` once pushed, else from ``folder``."""
    from huggingface_hub import ModelCard

    body = [
        f"# {config['architecture']} video encoder (SALT)",
        "",
        "A video encoder trained with SALT by salt-vla: a student predicted a frozen teacher's "
        "latents from masked video. It maps clips to patch tokens for VLA policies.",
        "",
        *card_table(config),
        "",
        "## Evaluation",
        "",
        *evaluation_lines(config),
        "",
        *usage_lines(config, repo_id or folder or "REPO_OR_FOLDER"),
    ]
    card = ModelCard(f"---\n{card_data(config, repo_id).to_yaml()}\n---\n\n" + "\n".join(body))
    return str(card)


def card_table(config: dict[str, Any]) -> list[str]:
    """What the encoder is: geometry, width, normalization, teacher, data, training."""
    summary = config.get("summary") or {}
    grid = grid_of(config)
    tokens = grid[0] * grid[1] * grid[2]
    lines = [
        "| | |",
        "|---|---|",
        f"| architecture | {config['architecture']} |",
        f"| clip | {config['num_frames']} frames x {config['image_size']} px, every "
        f"{config.get('frame_step', 1)}th frame"
        + (f" (at {config['fps']} fps)" if config.get("fps") else "")
        + " |",
        f"| tokens | {tokens} = grid {grid[0]}x{grid[1]}x{grid[2]} (tubelet "
        f"{config['tubelet_size']}, patch {config['patch_size']}) |",
    ]
    if "hidden_size" in config:
        width = config["hidden_size"]
        lines.append(f"| embedding width | {width} (tokens are `[B, N, {width}]`) |")
    lines += [
        f"| normalization | mean {config['mean']}, std {config['std']} |",
        f"| teacher | `{config.get('teacher', '?')}` |",
        f"| training data | `{config.get('data', '?')}` |",
    ]
    if "checkpoint_step" in summary:
        lines.append(f"| steps | {summary['checkpoint_step']} |")
    if "min_loss" in summary and "last_loss" in summary:
        lines.append(
            f"| distillation loss | first {summary.get('first_loss', float('nan')):.4f}, "
            f"min {summary['min_loss']:.4f}, last {summary['last_loss']:.4f} |"
        )
    if "checkpoint_val_loss" in summary:
        lines.append(
            f"| held-out distillation loss | {summary['checkpoint_val_loss']:.4f} (the run's "
            f"best checkpoint, chosen by it) |"
        )
    lines.append(f"| weights | `model.safetensors`, {config.get('torch_dtype', 'float32')} |")
    return lines


def grid_of(config: dict[str, Any]) -> tuple[int, int, int]:
    side = config["image_size"] // config["patch_size"]
    return config["num_frames"] // config["tubelet_size"], side, side


def evaluation_lines(config: dict[str, Any]) -> list[str]:
    """The recorded evaluations as a table, or how to run one."""
    recorded = evaluations_of(config)
    if not recorded:
        return [
            "Not recorded with this export. Frozen evaluation with an attentive probe, "
            "recorded here: `salt eval classify THIS_FOLDER --data motion --record` (the "
            "built-in motion benchmark) or `--data path/to/ssv2/train.json`."
        ]
    lines = ["| task | data | metric | value | recorded |", "|---|---|---|---|---|"]
    for e in recorded:
        value = f"{e['value']:.4f}" + (f" +- {e['stderr']:.4f}" if e.get("stderr") else "")
        what = e.get("name") or e["metric"]
        lines.append(f"| {e['task']} | `{e['dataset']}` | {what} | {value} | {e.get('date', '')} |")
    return lines


def usage_lines(config: dict[str, Any], source: str) -> list[str]:
    tokens = grid_of(config)
    return [
        "## Use",
        "",
        "```python",
        "import torch",
        "from salt import VideoEncoder",
        "",
        f'encoder = VideoEncoder.from_pretrained("{source}").freeze()',
        f"video = torch.randint(0, 256, (1, {config['num_frames']}, 3, {config['image_size']}, "
        f"{config['image_size']}), dtype=torch.uint8)",
        f"tokens = encoder(video)  # [1, {tokens[0] * tokens[1] * tokens[2]}, width]",
        "```",
        "",
        f"Written by salt-vla {config.get('salt_version', __version__)}.",
        "",
    ]


def push_to_hub(
    folder: Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload salt-vla encoder",
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload an export folder (config, weights, model card) to ``repo_id`` in one commit,
    creating the repository (``private``) and the branch ``revision`` if needed, or opening
    a pull request (``create_pr``); returns the commit's (or the PR's) URL. Needs a token
    (``hf auth login`` or ``HF_TOKEN``) with write access."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from salt.io import read_json

    folder = Path(folder)
    missing = [n for n in (*FILES, CARD) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a whole export (no {', '.join(missing)})")
    # The card as pushed loads from the repo id (the local one cannot know it); one commit.
    card = model_card(read_json(folder / "config.json"), repo_id=repo_id).encode()
    operations = [CommitOperationAdd(name, str(folder / name)) for name in FILES]
    operations.append(CommitOperationAdd(CARD, card))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
    )
    url = getattr(info, "pr_url", None) if create_pr else None
    return str(url or getattr(info, "commit_url", info))
