"""The Gradio page of ``salt app``: Masks, Latents and Runs tabs wired to ``callbacks``."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from salt_app import callbacks as cb

log = logging.getLogger("salt.app")  # under "salt": the CLI shows it

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class Handlers:
    """What the page's buttons call; files are read only under ``roots``."""

    def __init__(self, runs: Path, roots, allow_hub: bool):
        self.runs, self.roots = runs, roots
        # Per page, not global: the last two loaded checkpoints stay in memory between
        # clicks, keyed by file and mtime so a run's newer checkpoint is picked up.
        self.cached_load = functools.lru_cache(maxsize=2)(
            lambda checkpoint, mtime, teacher: cb.load_run(checkpoint, teacher, roots, allow_hub)
        )

    def load_run(self, run: str, teacher: str) -> cb.LoadedRun:
        from salt.checkpoints import resolve_checkpoint

        if not run:
            raise ValueError("pick a run directory or a checkpoint file")
        checkpoint = cb.confined(resolve_checkpoint(cb.confined(run, self.roots)), self.roots)
        return self.cached_load(str(checkpoint), checkpoint.stat().st_mtime_ns, teacher)

    @staticmethod
    def clip_source(choice: str, path: str, upload) -> str:
        if upload:
            return str(upload)
        return path.strip() or choice

    def on_masks(self, choice, path, upload, masker, options, seed, frames, size):
        r = cb.render_masks(
            self.clip_source(choice, path, upload),
            masker,
            options,
            int(seed or 0),
            num_frames=int(frames),
            image_size=int(size),
            roots=self.roots,
        )
        return r.images, r.table, r.message

    def on_latents(self, run, teacher, choice, path, upload, seed):
        try:
            loaded = self.load_run(str(run or "").strip(), str(teacher or "").strip())
        except Exception as err:  # noqa: BLE001 - shown on the page
            return [], [], cb.error_message(err)
        clip = self.clip_source(choice, path, upload)
        r = cb.render_latents(loaded, clip, int(seed or 0), self.roots)
        note = f"checkpoint {loaded.checkpoint} (step {loaded.step}), teacher {loaded.cfg.teacher.spec}"
        return r.images, r.table, r.message or note

    def on_runs(self, chosen, smooth=0.0, log_loss=False):
        import gradio as gr

        r = cb.plot_runs(list(chosen or []), self.roots, float(smooth or 0), bool(log_loss))
        keys = r.keys or ["loss"]
        return (
            r.image,
            r.table,
            r.message,
            gr.update(choices=keys, value=keys[0]),
            cb.metric_frame(r.metrics, keys[0]),
            r.metrics,
        )

    @staticmethod
    def on_metric(key, metrics):
        return cb.metric_frame(metrics or {}, key or "loss")

    def refresh_runs(self):
        import gradio as gr

        found = cb.list_runs(self.runs)
        return gr.update(choices=found), gr.update(choices=found, value=found[:1])


SYNTHETIC = [f"synthetic/{i}" for i in range(16)]


def build_app(
    runs: str | Path = "runs", allow: tuple[str | Path, ...] = (), allow_hub: bool = False
):
    """The ``gr.Blocks`` page; files are read only under :func:`callbacks.allowed_roots`
    (``runs``, the working directory, the salt cache, uploads and the ``allow`` folders),
    and a teacher on the Hugging Face Hub is fetched only with ``allow_hub``."""
    import gradio as gr

    runs = Path(runs)
    handlers = Handlers(runs, cb.allowed_roots(runs, allow), allow_hub)
    found = cb.list_runs(runs)
    # No analytics: gradio would report to its servers, and the viewer stays off the network.
    with gr.Blocks(title="salt viewer", analytics_enabled=False) as page:
        gr.Markdown(f"# salt viewer\nruns: `{runs.resolve()}`")
        with gr.Tab("Masks", id="masks"):
            masks = masks_tab(gr, handlers)
        with gr.Tab("Latents", id="latents"):
            run_choice = latents_tab(gr, handlers, found)
        with gr.Tab("Runs", id="runs"):
            runs_tab(gr, handlers, found, run_choice)
        # The page opens with the default clip's masks already drawn.
        page.load(handlers.on_masks, *masks)
    return page


def masks_tab(gr, handlers: Handlers):
    """The Masks tab; its inputs and outputs (the page draws them on load)."""
    from salt.registry import maskers

    with gr.Row():
        m_choice = gr.Dropdown(
            SYNTHETIC, value="synthetic/0", label="built-in clip", elem_id="masks-clip"
        )
        m_path = gr.Textbox(label="or a video path", placeholder="videos/clip.mp4")
        m_upload = gr.File(label="or upload a video", type="filepath")
    with gr.Row():
        m_masker = gr.Dropdown(
            maskers.names(), value="multiblock", label="masker", elem_id="masks-masker"
        )
        m_options = gr.Textbox(label="options (JSON)", placeholder='{"ratio": 0.75}', value="")
        m_seed = gr.Number(value=0, precision=0, label="seed", elem_id="masks-seed")
        m_frames = gr.Slider(2, 32, value=8, step=2, label="frames")
        m_size = gr.Slider(32, 224, value=112, step=16, label="image size")
    m_button = gr.Button("Render masks", variant="primary", elem_id="masks-render")
    m_message = gr.Markdown(elem_id="masks-message")
    m_gallery = gr.Gallery(
        label="target tokens tinted per group", columns=1, elem_id="masks-gallery"
    )
    m_table = gr.Dataframe(headers=cb.SHARE_HEADERS, label="share per time slice")
    m_inputs = [m_choice, m_path, m_upload, m_masker, m_options, m_seed, m_frames, m_size]
    m_outputs = [m_gallery, m_table, m_message]
    m_button.click(handlers.on_masks, m_inputs, m_outputs)
    return m_inputs, m_outputs


def latents_tab(gr, handlers: Handlers, found: list[str]):
    """The Latents tab; its run field (the Runs tab's refresh updates it)."""
    with gr.Row():
        l_run = gr.Dropdown(
            found,
            value=found[0] if found else None,
            allow_custom_value=True,
            label="run directory or checkpoint",
        )
        l_teacher = gr.Textbox(label="teacher spec (empty: the run's)")
        l_seed = gr.Number(value=0, precision=0, label="mask seed")
    with gr.Row():
        l_choice = gr.Dropdown(SYNTHETIC, value="synthetic/0", label="built-in clip")
        l_path = gr.Textbox(label="or a video path")
        l_upload = gr.File(label="or upload a video", type="filepath")
    l_button = gr.Button("Predict", variant="primary", elem_id="latents-run")
    l_message = gr.Markdown(elem_id="latents-message")
    l_gallery = gr.Gallery(label="per time slice", columns=1, elem_id="latents-gallery")
    l_table = gr.Dataframe(headers=cb.LOSS_HEADERS, label="clip loss")
    l_button.click(
        handlers.on_latents,
        [l_run, l_teacher, l_choice, l_path, l_upload, l_seed],
        [l_gallery, l_table, l_message],
    )
    return l_run


def runs_tab(gr, handlers: Handlers, found: list[str], run_choice) -> None:
    """The Runs tab: curves, the summary table and an interactive plot per metric."""
    with gr.Row():
        r_runs = gr.CheckboxGroup(found, value=found[:1], label="runs")
        r_refresh = gr.Button("Refresh")
    with gr.Row():
        r_smooth = gr.Slider(
            0, 0.99, value=0, step=0.01, label="smoothing (EMA weight on the past; 0 = raw)"
        )
        r_log = gr.Checkbox(label="log-scale loss panels")
    r_button = gr.Button("Plot", variant="primary", elem_id="runs-plot")
    r_message = gr.Markdown(elem_id="runs-message")
    r_metrics = gr.State({})
    r_key = gr.Dropdown(
        ["loss"], value="loss", label="metric (interactive plot)", elem_id="runs-metric"
    )
    r_line = gr.LinePlot(x="step", y="value", color="run", label="zoom, hover", elem_id="runs-line")
    r_image = gr.Image(label="loss terms and lr", type="numpy", elem_id="runs-image")
    r_table = gr.Dataframe(headers=cb.RUN_HEADERS, label="summary")
    outputs = [r_image, r_table, r_message, r_key, r_line, r_metrics]
    r_button.click(handlers.on_runs, [r_runs, r_smooth, r_log], outputs)
    r_key.change(handlers.on_metric, [r_key, r_metrics], [r_line])
    r_refresh.click(handlers.refresh_runs, [], [run_choice, r_runs])


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    runs: str | Path = "runs",
    allow: tuple[str | Path, ...] = (),
    allow_hub: bool = False,
):
    """Build the page and serve it in a background thread; returns ``(page, url)``.

    Call ``page.block_thread()`` to wait (``salt app`` does), ``page.close()`` to stop.
    """
    page = build_app(runs, allow, allow_hub)
    if host not in LOCAL_HOSTS:
        log.warning(
            "serving on %s: anyone who can reach this host can browse the runs, cache and "
            "working folder; use the default 127.0.0.1 unless you mean that",
            host,
        )
    # No allowed_paths: callbacks return arrays, which gradio serves from its own cache, so
    # nothing under the roots is exposed over HTTP beyond what the page rendered.
    page.queue(default_concurrency_limit=1)  # one model in memory at a time on small machines
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
    )
    return page, url or f"http://{host}:{port}/"
