"""The viewer (`salt app`): callbacks as plain functions, the page, and one browser round trip."""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from salt.synthetic import SyntheticMotion
from salt_app import callbacks as cb

GEOMETRY = dict(num_frames=8, image_size=64, patch_size=16, tubelet_size=2, frame_step=4)


@pytest.fixture
def roots(tmp_path):
    return [tmp_path.resolve()]


def _token_centre(t, i, j, size=64, grid=4, gap=4):
    """Pixel (row, col) at the centre of token (i, j) of time slice t in a mask strip."""
    cell = size // grid
    return i * cell + cell // 2, t * (size + gap) + j * cell + cell // 2


def test_masks_tint_exactly_the_target_tokens_and_shares_sum_to_one(roots):
    r = cb.render_masks("synthetic/3", "tube", '{"ratio": 0.75}', seed=5, roots=roots, **GEOMETRY)
    assert r.message == ""
    assert len(r.images) == 1 and r.context.shape == (1, 4, 4, 4)
    image, caption = r.images[0]
    assert image.shape == (64, 4 * 64 + 3 * 4, 3) and image.dtype == np.uint8
    assert "tube" in caption
    frames = SyntheticMotion(length=4, num_frames=8, image_size=64).render(3)
    for t in range(4):
        for i in range(4):
            for j in range(4):
                y, x = _token_centre(t, i, j)
                seen, original = image[y, x], frames[2 * t][y, j * 16 + 8]
                if r.context[0, t, i, j]:
                    assert np.array_equal(seen, original)
                else:
                    assert not np.array_equal(seen, original)
    # Tube masks: the same share of context in every slice, 4 of 16 tokens kept.
    assert [row[:2] for row in r.table] == [["tube", t] for t in range(4)]
    for _, _, context, target in r.table:
        assert context + target == pytest.approx(1.0)
        assert context == pytest.approx(0.25)


def test_multiblock_gives_one_image_per_group_and_the_seed_changes_the_mask(roots):
    a = cb.render_masks("synthetic/0", "multiblock", "", seed=0, roots=roots, **GEOMETRY)
    b = cb.render_masks("synthetic/0", "multiblock", "", seed=1, roots=roots, **GEOMETRY)
    assert a.message == "" and [c.split(": ")[0] for _, c in a.images] == [
        "synthetic/0 · short",
        "synthetic/0 · long",
    ]
    assert not np.array_equal(a.context, b.context)
    again = cb.render_masks("synthetic/0", "multiblock", "", seed=0, roots=roots, **GEOMETRY)
    assert np.array_equal(a.context, again.context)
    for group, t, context, target in a.table:
        g = ["short", "long"].index(group)
        assert context == pytest.approx(a.context[g, t].mean(), abs=1e-4)
        assert context + target == pytest.approx(1.0)


def test_masks_of_a_video_file(tmp_path, roots):
    pytest.importorskip("av")
    from videos import write_video

    path = write_video(tmp_path / "clip.mp4", n=40, height=48, width=64)
    r = cb.render_masks(str(path), "random", "", seed=2, roots=roots, **GEOMETRY)
    assert r.message == ""
    assert r.images[0][0].shape == (64, 4 * 64 + 3 * 4, 3)
    assert r.images[0][1].startswith("clip.mp4")


@pytest.mark.parametrize(
    "source, masker, options, expected",
    [
        ("synthetic/0", "tubes", "", "Did you mean 'tube'"),
        ("synthetic/0", "tube", "{ratio: 1}", "must be a JSON object"),
        ("synthetic/0", "tube", "[0.5]", "must be a JSON object"),
        ("synthetic/0", "tube", '{"ratio": 1.5}', "strictly between 0 and 1"),
        ("synthetic/0", "multiblock", '{"colour": 1}', "bad mask.options"),
        ("", "tube", "", "pick a clip"),
        ("missing.mp4", "tube", "", "does not exist"),
    ],
)
def test_bad_mask_input_is_a_message(tmp_path, roots, source, masker, options, expected):
    if source == "missing.mp4":
        source = str(tmp_path / source)
    r = cb.render_masks(source, masker, options, roots=roots, **GEOMETRY)
    assert expected in r.message and r.images == [] and r.table == []


def test_a_file_that_is_not_a_video_is_a_message(tmp_path, roots):
    bogus = tmp_path / "notes.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    r = cb.render_masks(str(bogus), "tube", "", roots=roots, **GEOMETRY)
    assert r.message.startswith("Not a readable video") and "notes.mp4" in r.message


def test_paths_outside_the_allowed_roots_are_refused(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    outside = tmp_path / "out" / "clip.mp4"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    roots = [inside.resolve()]
    with pytest.raises(cb.PathRefused):
        cb.confined(outside, roots)
    with pytest.raises(cb.PathRefused):  # .. and symlinks do not escape
        cb.confined(inside / ".." / "out" / "clip.mp4", roots)
    (inside / "link.mp4").symlink_to(outside)
    with pytest.raises(cb.PathRefused):
        cb.confined(inside / "link.mp4", roots)
    assert cb.confined(inside, roots) == inside.resolve()
    r = cb.render_masks(str(outside), "tube", "", roots=roots, **GEOMETRY)
    assert r.message.startswith("Refused:") and r.images == []
    assert cb.plot_runs([str(outside.parent)], roots).message.startswith("Refused:")
    assert cb.render_latents(None, "synthetic/0").message == "Error: load a run first"


def test_default_roots_hold_runs_cache_cwd_and_uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("SALT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    roots = cb.allowed_roots(tmp_path / "runs")
    assert roots == [
        (tmp_path / "runs").resolve(),
        (tmp_path / "cache").resolve(),
        Path.cwd().resolve(),
        (tmp_path / "uploads").resolve(),
    ]


# ---------------------------------------------------------------------------------------
# Latents and runs need a trained checkpoint: one tiny run for the module.


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY

    from salt.config import build_config
    from salt.train import train

    out = tmp_path_factory.mktemp("app_runs")
    cfg = build_config(
        overrides={**TINY, "run.out": str(out), "run.name": "tiny", "train.steps": 4}
    )
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def loaded(run):
    return cb.load_run(str(run), "", [run.parent.resolve()])


def test_latents_show_teacher_prediction_and_error_in_one_pca_basis(run, loaded):
    roots = [run.parent.resolve()]
    assert loaded.step == 4 and loaded.cfg.teacher.spec == "pixels"
    r = cb.render_latents(loaded, "synthetic/5", seed=3, roots=roots)
    assert r.message == ""
    assert len(r.images) == 2  # multiblock: short and long groups
    t_len, gh, gw = loaded.cfg.grid  # (2, 4, 4)
    size = max(gh * cb.TOKEN_PX, 96)
    cell = size // gh
    group_mse = []
    for (image, caption), context in zip(
        r.images,
        cb.make_masks("multiblock", {}, loaded.cfg.grid, 5, 3)[1],
        strict=True,
    ):
        assert image.shape == (t_len * size + (t_len - 1) * 4, 4 * size + 3 * 4, 3)
        for t in range(t_len):
            for i in range(gh):
                for j in range(gw):
                    y = t * (size + 4) + i * cell + cell // 2
                    teacher, pred, error = (
                        image[y, c * (size + 4) + j * cell + cell // 2] for c in (1, 2, 3)
                    )
                    if context[t, i, j]:  # unmasked: the teacher's own latent, no error
                        assert np.array_equal(teacher, pred)
                        assert np.array_equal(error, [0, 0, 0])
        group_mse.append(float(caption.split("MSE ")[1].split(",")[0]))
    assert r.loss is not None and math.isfinite(r.loss) and r.loss > 0
    assert dict(r.table)["loss"] == pytest.approx(r.loss, abs=1e-6)
    # mse: the clip's loss is the mean of the groups' masked-token errors.
    assert r.loss == pytest.approx(np.mean(group_mse), abs=1e-3)
    other = cb.render_latents(loaded, "synthetic/5", seed=4, roots=roots)
    assert other.loss != r.loss


def test_latents_bad_input_is_a_message(run, loaded, tmp_path):
    roots = [run.parent.resolve(), tmp_path.resolve()]
    with pytest.raises(ValueError, match="does not fit teacher"):
        cb.load_run(str(run), "random:vit_tiny", roots)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoints"):
        cb.load_run(str(empty), "", roots)
    bogus = tmp_path / "bad.webm"
    bogus.write_bytes(b"not a video")
    assert cb.render_latents(loaded, str(bogus), roots=roots).message.startswith(
        "Not a readable video"
    )


def test_app_latents_callback_turns_load_errors_into_messages(run, tmp_path):
    pytest.importorskip("gradio")
    from salt_app.app import build_app

    page = build_app(run.parent)
    on_latents = next(
        fn.fn for fn in page.fns.values() if getattr(fn.fn, "__name__", "") == "on_latents"
    )
    images, table, message = on_latents(str(run), "random:vit_tiny", "synthetic/0", "", None, 0)
    assert images == [] and "does not fit teacher" in message
    images, _, message = on_latents(str(run), "", "synthetic/0", "", None, 0)
    assert len(images) == 2 and message.startswith("checkpoint ")
    _, _, message = on_latents("/etc", "", "synthetic/0", "", None, 0)
    assert message.startswith("Refused:")


def test_teacher_specs_are_confined_to_the_allowed_roots(run, tmp_path):
    """A teacher field naming a folder outside the roots is refused before anything opens
    it: the page says "not allowed" alike for folders that exist and ones that do not."""
    pytest.importorskip("gradio")
    from salt_app.app import build_app

    page = build_app(run.parent)
    on_latents = next(
        fn.fn for fn in page.fns.values() if getattr(fn.fn, "__name__", "") == "on_latents"
    )
    messages = {}
    for spec in ("videomae:/etc", "encoder:/root", "cached:/etc", "videomae:/no/such/dir"):
        images, _, message = on_latents(str(run), spec, "synthetic/0", "", None, 0)
        assert images == [] and message.startswith("Refused: not allowed"), message
        messages[spec] = message.replace(spec.partition(":")[2], "PATH")
    assert len(set(messages.values())) == 1  # nothing tells an existing folder apart
    assert "passwd" not in messages["videomae:/etc"]
    escape = "videomae:" + "/".join([".."] * 30) + "/etc"
    assert on_latents(str(run), escape, "synthetic/0", "", None, 0)[2].startswith("Refused:")
    # names that are not paths still work (they resolve under the working directory)
    assert cb.check_teacher_spec("random:vit_tiny", [tmp_path]) == "random:vit_tiny"


# A file outside the roots, as /etc/passwd would be: nothing of it may reach the page.
SECRET = "root:x:0:0:SECRET-LINE:/root:/bin/bash\nsecond:SECRET-TWO\n"


def _no_secret(message: str) -> bool:
    return "SECRET" not in message and "root:x" not in message


@pytest.fixture
def fenced(tmp_path, run):
    """``(roots, runs, outside)``: a copy of the tiny run under ``runs`` (the only root) and
    a secret file beside it, outside the roots."""
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "copy")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text(SECRET)
    shutil.copy(next((run / "checkpoints").iterdir()), outside / "step_99.pt")
    return [runs.resolve()], runs, outside


def test_a_file_linked_out_of_an_allowed_run_is_refused_and_never_read(fenced):
    """The folder is inside the roots, the file in it is a link to outside: each file is
    checked as it is opened, not just the folder."""
    pytest.importorskip("PIL")
    roots, runs, outside = fenced
    copy = runs / "copy"
    (copy / "metrics.jsonl").unlink()
    (copy / "metrics.jsonl").symlink_to(outside / "passwd")
    r = cb.plot_runs([str(copy)], roots)
    assert r.message.startswith("Refused: not allowed") and "metrics.jsonl" in r.message
    assert _no_secret(r.message) and r.image is None
    # A checkpoint linked out, even a genuine one, is refused before it is loaded.
    (copy / "checkpoints" / "step_99.pt").symlink_to(outside / "step_99.pt")
    with pytest.raises(cb.PathRefused, match="step_99.pt"):
        cb.load_run(str(copy), "", roots)
    (copy / "checkpoints" / "step_99.pt").unlink()
    (copy / "checkpoints" / "step_99.pt").symlink_to(outside / "passwd")
    with pytest.raises(cb.PathRefused) as refused:
        cb.load_run(str(copy), "", roots)
    assert _no_secret(str(refused.value))
    # A video linked out.
    (runs / "clip.mp4").symlink_to(outside / "passwd")
    r = cb.render_masks(str(runs / "clip.mp4"), "tube", "", roots=roots, **GEOMETRY)
    assert r.message.startswith("Refused:") and _no_secret(r.message)


def test_teacher_folders_are_checked_file_by_file(fenced, tmp_path, monkeypatch):
    """An export, run or cache folder given as a teacher is refused when anything in it
    (an export's config, a run's checkpoint, a cache's shard) leads outside the roots."""
    roots, runs, outside = fenced
    export = runs / "export"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"")
    (export / "config.json").symlink_to(outside / "passwd")
    with pytest.raises(cb.PathRefused, match="config.json") as refused:
        cb.check_teacher_spec(f"encoder:{export}", roots)
    assert _no_secret(str(refused.value))
    nested = runs / "teacher-run" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / "step_1.pt").symlink_to(outside / "step_99.pt")
    with pytest.raises(cb.PathRefused, match="step_1.pt"):
        cb.check_teacher_spec(f"encoder:{nested.parent}", roots)
    linked = runs / "linked-folder"  # a folder linked out is refused as a whole
    linked.symlink_to(outside)
    with pytest.raises(cb.PathRefused):
        cb.check_teacher_spec(f"encoder:{runs}", roots)
    linked.unlink()
    # cached:NAME is the folder of that name under the salt cache.
    monkeypatch.setenv("SALT_CACHE_DIR", str(runs / "salt-cache"))
    cache = runs / "salt-cache" / "latents" / "v1tiny"
    cache.mkdir(parents=True)
    (cache / "index.json").write_text("{}")
    assert cb.check_teacher_spec("cached:v1tiny", roots) == "cached:v1tiny"
    (cache / "shard_00000.npy").symlink_to(outside / "passwd")
    with pytest.raises(cb.PathRefused, match="shard_00000.npy"):
        cb.check_teacher_spec("cached:v1tiny", roots)
    # Everything inside: the spec passes unchanged.
    (cache / "shard_00000.npy").unlink()
    (export / "config.json").unlink()
    (export / "config.json").write_text("{}")
    assert cb.check_teacher_spec(f"encoder:{export}", roots) == f"encoder:{export}"


def test_errors_name_the_file_and_never_quote_it(fenced):
    """Files inside the roots that are not what they should be: the page says which and
    what is wrong, not what they hold (parsers quote the bytes they stopped at)."""
    pytest.importorskip("PIL")
    roots, runs, _ = fenced
    copy = runs / "copy"
    (copy / "metrics.jsonl").write_text(SECRET)
    r = cb.plot_runs([str(copy)], roots)
    assert r.message == (
        "Unreadable file: copy/metrics.jsonl is not a readable metrics log (one JSON object a "
        "line); it is damaged, truncated or another kind of file"
    )
    (copy / "checkpoints" / "step_99.pt").write_text(SECRET)
    with pytest.raises(cb.UnreadableInput) as err:
        cb.load_run(str(copy), "", roots)
    assert str(err.value).startswith("checkpoints/step_99.pt is not a readable salt training")
    assert _no_secret(cb.error_message(err.value))
    # A teacher's file, read by its loader: salt's read error, less the parser's aside.
    (copy / "checkpoints" / "step_99.pt").unlink()
    export = runs / "export"
    export.mkdir()
    (export / "config.json").write_text("SECRET-LINE {")
    (export / "model.safetensors").write_bytes(SECRET.encode())
    from salt.io import UnreadableFileError

    with pytest.raises(UnreadableFileError) as err:
        cb.load_run(str(copy), f"encoder:{export}", roots)
    message = cb.error_message(err.value)
    assert (
        message == f"Unreadable file: {export / 'config.json'} is not valid JSON; it may be damaged"
    )
    quoted = UnreadableFileError("x.pt is not a readable torch file (invalid load key, 'r'.); ...")
    assert cb.error_message(quoted) == "Unreadable file: x.pt is not a readable torch file; ..."


def test_a_hub_teacher_is_refused_unless_the_viewer_allows_the_hub(run, tmp_path, monkeypatch):
    """`encoder:org/name` reaches the network only when `salt app --allow-hub` says so; with
    it and no network, the Hub's own one-line offline error comes back at once."""
    pytest.importorskip("gradio")
    from huggingface_hub import constants

    from salt_app.app import build_app

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for allow_hub in (False, True):
        page = build_app(run.parent, allow_hub=allow_hub)
        on_latents = next(
            fn.fn for fn in page.fns.values() if getattr(fn.fn, "__name__", "") == "on_latents"
        )
        images, _, message = on_latents(
            str(run), "encoder:robot-lab/absent", "synthetic/0", "", None, 0
        )
        assert images == []
        if allow_hub:
            assert message.startswith("Error: could not load 'robot-lab/absent'")
            assert "HF_HUB_OFFLINE=1" in message and len(attempts) >= 1
        else:
            assert message == (
                "Refused: teacher 'encoder:robot-lab/absent' names a Hugging Face Hub repo; this "
                "viewer does not reach the network unless started with `salt app --allow-hub` - "
                "or give a local folder"
            )
            assert attempts == []
    # A path-like spec is never a Hub id: `runs/typo` is a missing folder, said as such.
    with pytest.raises(FileNotFoundError, match="no encoder at 'runs/typo'"):
        cb.load_run(str(run), "encoder:runs/typo", [run.parent.resolve(), Path.cwd()])


def _write_metrics(run_dir: Path, losses: list[float]) -> Path:
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": step, "loss": loss, "loss/mse": loss, "lr": 1e-3}) + "\n")
    return run_dir


def test_runs_plot_curves_and_flag_the_rebound(run, tmp_path):
    pytest.importorskip("matplotlib", reason="the curves are drawn with matplotlib")
    rebound = _write_metrics(tmp_path / "runs" / "rebound", [1.0, 0.5, 0.3, 0.2, 0.6, 0.9, 1.2])
    roots = [run.parent.resolve(), tmp_path.resolve()]
    assert cb.list_runs(tmp_path / "runs") == [str(rebound)]
    r = cb.plot_runs([str(run), str(rebound)], roots)
    assert r.message == ""
    assert set(r.series) == {"tiny", "rebound"}
    assert set(r.series["tiny"]) >= {"loss", "loss/mse", "lr"}
    assert len(r.series["tiny"]["loss"]) == 4
    assert r.image.ndim == 3 and r.image.shape[2] == 3 and r.image.dtype == np.uint8
    assert r.image.shape[0] > 3 * 150  # panels: loss, loss/mse, lr
    for i in range(2):  # each run's colour is on the plot
        assert (r.image.reshape(-1, 3) == cb.PALETTE[i]).all(axis=1).any()
    rows = {row[0]: row for row in r.table}
    assert rows["rebound"][2:7] == [0.2, 4, 1.2, "-", "-"] and rows["rebound"][8] == "yes"
    assert rows["tiny"][1] == 4
    # A run that measured a held-out loss: its best and the rebound judged on that curve.
    held = _write_metrics(tmp_path / "runs" / "held", [1.0, 0.8, 0.6, 0.5])
    with open(held / "metrics.jsonl", "a") as f:
        for step, value in ((2, 0.9), (4, 0.95)):
            f.write(json.dumps({"step": step, "val_loss": value}) + "\n")
    (row,) = cb.plot_runs([str(held)], roots).table
    assert row[5:] == [0.9, 2, "+5.6% (held-out)", "yes"]
    assert "val_loss" in cb.plot_runs([str(held)], roots).series["held"]
    # The interactive plot: every logged metric to choose from, one line per run.
    assert r.keys[:3] == ["loss", "loss/mse", "lr"]
    assert {"grad_norm", "clips_per_s", "mfu", "wd"} <= set(r.keys)
    frame = cb.metric_frame(r.metrics, "loss")
    assert list(frame.columns) == ["step", "value", "run"]
    assert sorted(set(frame["run"])) == ["rebound", "tiny"] and len(frame) == 4 + 7
    assert frame[frame.run == "rebound"]["value"].tolist() == [1.0, 0.5, 0.3, 0.2, 0.6, 0.9, 1.2]
    lr = cb.metric_frame(r.metrics, "grad_norm")
    assert set(lr["run"]) == {"tiny"}  # only the real run logged a gradient norm
    # One bad run among good ones: the good one is drawn, the bad one explained.
    r = cb.plot_runs([str(rebound), str(tmp_path)], roots)
    assert r.image is not None and "no metrics.jsonl" in r.message
    assert cb.plot_runs([], roots).message == "pick one or more runs"


def test_runs_plot_smooths_and_logs_as_salt_plot_does(tmp_path):
    pytest.importorskip("matplotlib", reason="the curves are drawn with matplotlib")
    run = _write_metrics(tmp_path / "runs" / "noisy", [1.0, 0.4, 0.9, 0.3, 0.8, 0.2])
    roots = [tmp_path.resolve()]
    plain = cb.plot_runs([str(run)], roots)
    styled = cb.plot_runs([str(run)], roots, smooth=0.9, log_loss=True)
    assert styled.message == "" and styled.image.shape == plain.image.shape
    assert not np.array_equal(styled.image, plain.image)
    bad = cb.plot_runs([str(run)], roots, smooth=1.5)
    assert bad.image is None and "smoothing 1.5 is not in [0, 1)" in bad.message


# ---------------------------------------------------------------------------------------
# The page


def test_app_builds_three_tabs():
    gr = pytest.importorskip("gradio")
    from salt_app.app import build_app

    page = build_app("runs-that-do-not-exist")
    assert isinstance(page, gr.Blocks)
    tabs = [b.label for b in page.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == ["Masks", "Latents", "Runs"]
    lines = [b for b in page.blocks.values() if isinstance(b, gr.LinePlot)]
    assert len(lines) == 1 and lines[0].elem_id == "runs-line"


def test_cli_app_defaults_to_localhost(capsys):
    from salt.cli import build_parser, main

    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.runs) == ("127.0.0.1", 7860, "runs")
    assert args.allow_hub is False  # the viewer stays off the network unless told
    assert build_parser().parse_args(["app", "--allow-hub"]).allow_hub is True
    assert args.func.__name__ == "cmd_app"
    with pytest.raises(SystemExit) as exit_:
        main(["app", "--help"])
    help_text = capsys.readouterr().out
    assert exit_.value.code == 0 and "--runs" in help_text and "--allow-hub" in help_text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    return next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )


def test_browser_clicks_through_the_masks_and_runs_tabs(tmp_path, monkeypatch):
    """Headless Chromium picks a clip, a masker and a seed, clicks Render and gets the image;
    then plots a run in the Runs tab, static image and interactive plot."""
    pytest.importorskip("gradio")
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright drives chromium here: pip install -e '.[dev]'")
    from PIL import Image

    from salt_app.app import launch

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    _write_metrics(tmp_path / "logged", [1.0, 0.6, 0.4, 0.35])
    page, url = launch(port=_free_port(), runs=tmp_path)
    errors = []

    def on_console(msg):
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    # Waits are explicit, with budgets for a busy 2-core machine; a healthy run takes seconds.
    try:
        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path=browser)
            try:
                tab = chrome.new_page()
                tab.set_default_timeout(30_000)
                tab.on("pageerror", lambda err: errors.append(f"uncaught: {err}"))
                tab.on("console", on_console)
                tab.goto(url)
                gallery = tab.locator("#masks-gallery img")
                gallery.first.wait_for(timeout=90_000)  # the default clip's masks, drawn on load
                before = gallery.evaluate_all("imgs => imgs.map(img => img.src)")

                tab.locator("#masks-clip input").click()
                tab.get_by_role("option", name="synthetic/3", exact=True).click()
                tab.locator("#masks-masker input").click()
                tab.get_by_role("option", name="tube", exact=True).click()
                tab.locator("#masks-seed input").fill("7")
                tab.locator("#masks-render").click()
                # Tube masks have one group: wait for its image to replace the default's two.
                tab.wait_for_function(
                    """before => {
                        const imgs = [...document.querySelectorAll('#masks-gallery img')];
                        return imgs.length === 1 && !before.includes(imgs[0].src)
                            && imgs[0].complete && imgs[0].naturalWidth > 0;
                    }""",
                    arg=before,
                )
                src, alt, width, height = gallery.first.evaluate(
                    "img => [img.src, img.alt, img.naturalWidth, img.naturalHeight]"
                )
                message = tab.locator("#masks-message").inner_text().strip()
                toasts = tab.locator('[data-testid="toast-body"]').all_inner_texts()
                with urllib.request.urlopen(src, timeout=10) as response:
                    served = response.read()
                # The Runs tab: Plot draws the run; the interactive plot gets its metric.
                tab.get_by_role("tab", name="Runs").click()
                tab.locator("#runs-plot").click()
                tab.locator("#runs-image img").first.wait_for(timeout=60_000)
                tab.locator("#runs-line canvas, #runs-line svg").first.wait_for(timeout=60_000)
                run_errors = tab.locator("#runs-message").inner_text().strip()
            finally:
                chrome.close()
    finally:
        page.close()

    expected = cb.render_masks("synthetic/3", "tube", "", seed=7)
    image, caption = expected.images[0]
    assert (message, toasts, errors) == ("", [], []), "the page showed an error"
    assert run_errors == "", run_errors
    assert alt == caption and (height, width) == image.shape[:2]
    shown = np.asarray(Image.open(io.BytesIO(served)).convert("RGB"), dtype=float)
    # The gallery serves lossy WebP, so no exact match: the seed reached the server when the
    # image is far closer to seed 7's mask than to seed 0's (about 3 vs 11 levels off).
    other = cb.render_masks("synthetic/3", "tube", "", seed=0).images[0][0]
    off_seed_7, off_seed_0 = np.abs(shown - image).mean(), np.abs(shown - other).mean()
    assert 2 * off_seed_7 < off_seed_0, "the page did not draw seed 7's mask"
