"""salt eval classify (salt/eval/classify.py): frozen attentive and linear probes on labelled
clips - the built-in motion benchmark and labelled video files - from an export, a run or a
checkpoint."""

from __future__ import annotations

import json
import math
import re

import attrs
import pytest
import torch
from videos import write_video

from salt.cli import main
from salt.config import DataConfig
from salt.eval.classify import (
    ClassifyReport,
    ClassifySettings,
    ProbeScore,
    classify,
    compare,
    labelled_splits,
    share_clips,
)
from salt.eval.heads import AttentiveProbe, LinearProbe, Whitening
from salt.eval.stats import gap_in_stderr
from salt.eval.tokens import FrozenEncoder, Tokens
from salt.export import encoder_config, write_export
from salt.registry import students

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
QUICK = {"epochs": 3, "workers": 0, "seeds": 3}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return students.create("vit_tiny", num_frames=2, image_size=32, patch_size=16, tubelet_size=2)


@pytest.fixture
def motion():
    return labelled_splits(DataConfig(spec="motion:28", num_frames=2, image_size=32))


def test_probes_map_tokens_to_class_logits():
    tokens = torch.randn(5, 7, 48)
    assert AttentiveProbe(48, 14)(tokens).shape == (5, 14)
    assert LinearProbe(48, 3)(tokens).shape == (5, 3)


@pytest.mark.parametrize("dim,heads", [(48, None), (48, 3), (16, 1)])
def test_attentive_pooling_is_multihead_attention_with_one_query(dim, heads):
    """The factorized pooling gives nn.MultiheadAttention's output and gradients (float64,
    perturbed parameters so no bias or weight is trivially zero)."""
    torch.manual_seed(0)
    probe = AttentiveProbe(dim, 5, heads=heads).double()
    with torch.no_grad():
        for param in probe.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    tokens = torch.randn(4, 9, dim, dtype=torch.float64) * 2

    def reference(normed: torch.Tensor) -> torch.Tensor:
        query = probe.query.expand(len(normed), -1, -1)
        out, _ = probe.attn(query, normed, normed, need_weights=False)
        return out[:, 0]

    results = []
    for pool in (probe.pool, reference):
        probe.zero_grad()
        x = tokens.clone().requires_grad_()
        out = pool(probe.norm(x))
        (out * torch.linspace(-1, 1, dim, dtype=torch.float64)).sum().backward()
        used = [p.grad for p in (probe.query, *probe.norm.parameters(), *probe.attn.parameters())]
        results.append((out.detach(), [x.grad, *used]))
    (ours, ours_grads), (ref, ref_grads) = results
    assert ours.shape == (4, dim)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_scores_are_top1_per_seed_with_their_standard_error(encoder, motion):
    report = classify(encoder, motion, MEAN, STD, ClassifySettings(**QUICK))
    assert report.classes[0] == "right" and report.chance == pytest.approx(1 / 14)
    assert (report.train_clips, report.test_clips, report.mode) == (28, 14, "cached")
    for probe in ("attentive", "linear"):
        score = report.score(probe)
        assert len(score.accuracies) == 3 and all(0 <= a <= 1 for a in score.accuracies)
        assert all(round(a * 14) == a * 14 for a in score.accuracies)  # hits out of 14 clips
        # Which clips each seed got right, in clip order: they are the accuracies.
        assert len(score.hits) == 3 and all(len(h) == 14 for h in score.hits)
        assert [sum(h) / 14 for h in score.hits] == list(score.accuracies)
    s = ProbeScore("x", (0.5, 0.6, 0.7))
    assert s.mean == pytest.approx(0.6) and s.stderr == pytest.approx(0.1 / math.sqrt(3))
    assert s.clip_stderr == 0.0  # no hits: unknown
    scores = report.to_dict()["scores"]
    assert set(scores) == {"attentive", "linear"}
    assert scores["attentive"]["hits"] == [list(h) for h in report.score("attentive").hits]
    assert scores["attentive"]["clip_stderr"] == report.score("attentive").clip_stderr
    assert report.seconds["features"] > 0 and report.seconds["probe_training"] > 0


def test_the_clip_standard_error_is_over_each_clips_share_of_right_seeds():
    # 4 clips; per clip the seeds' shares are 1, 1/2, 0, 1/2: mean 1/2, sample s.d. 0.408.
    s = ProbeScore("attentive", (0.5, 0.5), ((1, 1, 0, 0), (1, 0, 0, 1)))
    assert s.clip_stderr == pytest.approx(math.sqrt(1 / 6) / 2)


def test_gaps_count_seed_and_paired_test_clip_errors():
    a = ProbeScore("attentive", (0.30, 0.32, 0.34))  # mean 0.32, s.e. 0.01155
    b = ProbeScore("attentive", (0.25, 0.25, 0.25))  # mean 0.25, s.e. 0 (exact in binary)
    # Without per-clip hits only the seeds count.
    assert gap_in_stderr(a, b) == pytest.approx(0.07 / (0.02 / math.sqrt(3)))
    assert gap_in_stderr(b, a) == pytest.approx(-gap_in_stderr(a, b))
    assert gap_in_stderr(b, b) == 0.0
    exact = ProbeScore("attentive", (0.5, 0.5))
    assert gap_in_stderr(exact, b) == math.inf and gap_in_stderr(b, exact) == -math.inf
    # Same 4 test clips, seeds agree: only the draw of clips is uncertain. a beats b on
    # clips 0 and 1, ties on 2 and 3: differences (1, 1, 0, 0), mean 1/2, paired s.e.
    # sqrt(1/3)/2.
    a = ProbeScore("attentive", (0.75, 0.75), ((1, 1, 1, 0),) * 2)
    b = ProbeScore("attentive", (0.25, 0.25), ((0, 0, 1, 0),) * 2)
    assert gap_in_stderr(a, b) == pytest.approx(0.5 / (math.sqrt(1 / 3) / 2))
    # Paired: clips both get right (2, 5) or both miss (3, 4, 6, 7) differ by 0 - a clip's
    # shared difficulty is not counted. Differences (1, 1, 0 x 6): mean 1/4, variance 3/14.
    more = ProbeScore("attentive", (0.5, 0.5), ((1, 1, 1, 0, 0, 1, 0, 0),) * 2)
    fewer = ProbeScore("attentive", (0.25, 0.25), ((0, 0, 1, 0, 0, 1, 0, 0),) * 2)
    assert gap_in_stderr(more, fewer) == pytest.approx(0.25 / math.sqrt(3 / 14 / 8))
    # Scored on different clips: no pairing, the seeds alone.
    other = ProbeScore("attentive", (0.2, 0.3), ((0, 1, 0, 0, 0), (1, 0, 0, 0, 1)))
    assert gap_in_stderr(a, other) == pytest.approx((0.75 - 0.25) / other.stderr)


def test_kept_tokens_are_encoded_once_for_every_epoch(encoder, motion):
    calls = []
    hook = encoder.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    try:
        kept = Tokens(
            FrozenEncoder(encoder, MEAN, STD, batch_size=16), motion.test, cached=True, stage="x"
        )
        epochs = [list(kept.batches(4, seed=epoch)) for epoch in range(3)]
    finally:
        hook.remove()
    assert sum(calls) == 14 and all(sum(len(y) for _, y, _ in e) == 14 for e in epochs)
    orders = [torch.cat([ids for _, _, ids in e]).tolist() for e in epochs]
    assert sorted(orders[0]) == list(range(14)) and orders[0] != orders[1]  # reshuffled


def test_live_encoding_gives_what_kept_tokens_give(encoder, motion):
    """Above --feature-memory the encoder runs every epoch: same batches, same probes."""
    kept = classify(encoder, motion, MEAN, STD, ClassifySettings(**{**QUICK, "seeds": 1}))
    live = classify(
        encoder,
        motion,
        MEAN,
        STD,
        ClassifySettings(**{**QUICK, "seeds": 1, "feature_memory_gb": 0}),
    )
    assert live.mode == "live" and kept.mode == "cached"
    for probe in ("attentive", "linear"):
        assert live.score(probe).accuracies == pytest.approx(
            kept.score(probe).accuracies, abs=1 / 14 + 1e-9
        )


def test_shared_clips_are_drawn_once_and_score_what_drawing_them_again_scores(encoder, motion):
    """The quick start's models (a curve's checkpoints) read one set of drawn clips: only
    the clips classify reads are drawn, once, into the splits, and the scores are those
    of fresh splits."""
    settings = ClassifySettings(**{**QUICK, "seeds": 2, "workers": 2, "max_train": 14})
    drawn = []
    generator = motion.train.generator
    original = type(generator).clip
    for split in (motion.train, motion.test):
        split.generator.clip = lambda i, g=split.generator: drawn.append(i) or original(g, i)
    scoring = share_clips(motion, settings)
    assert scoring == attrs.evolve(settings, workers=0)
    assert sorted(motion.train.kept) == list(range(14))  # max_train: the first 14 of 28
    assert sorted(motion.test.kept) == list(range(14))
    fresh = labelled_splits(DataConfig(spec="motion:28", num_frames=2, image_size=32))
    for i in range(14):
        assert torch.equal(motion.test.kept[i], fresh.test.clip(i))
    assert sorted(drawn) == sorted([*range(14), *range(14)])  # each read clip, once
    drawn.clear()
    shared = [classify(encoder, motion, MEAN, STD, scoring) for _ in range(2)]
    assert drawn == []  # both encoders read the kept clips
    alone = classify(encoder, fresh, MEAN, STD, attrs.evolve(settings, workers=0))
    for report in shared:
        for probe in ("attentive", "linear"):
            assert report.score(probe).accuracies == alone.score(probe).accuracies
            assert report.score(probe).hits == alone.score(probe).hits


def test_shared_clips_drawn_by_workers_are_the_clips():
    splits = labelled_splits(DataConfig(spec="motion:64", num_frames=2, image_size=32))
    share_clips(splits, ClassifySettings(**{**QUICK, "workers": 2}))
    assert sorted(splits.train.kept) == list(range(64)) and len(splits.test.kept) == 32
    fresh = labelled_splits(DataConfig(spec="motion:64", num_frames=2, image_size=32))
    for split, again in ((splits.train, fresh.train), (splits.test, fresh.test)):
        assert all(torch.equal(split.kept[i], again.clip(i)) for i in split.kept)


@pytest.mark.parametrize(("workers", "threads", "drawers"), [(1, 2, 2), (3, 2, 3), (0, 2, 0)])
def test_shared_clips_are_drawn_on_every_thread_the_encoders_use(
    monkeypatch, workers, threads, drawers
):
    import salt.data as data_module

    seen = []

    def loader(*args, num_workers, **kwargs):
        seen.append(num_workers)
        return torch.utils.data.DataLoader(*args, num_workers=0, **kwargs)

    monkeypatch.setattr(data_module, "DataLoader", loader)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    splits = labelled_splits(DataConfig(spec="motion:64", num_frames=2, image_size=32))
    share_clips(splits, ClassifySettings(**{**QUICK, "workers": workers}))
    assert seen == [drawers, min(drawers, 2)]  # 64 training clips, then 32 test: 2 batches


def test_clips_are_not_shared_past_the_memory_they_may_keep(encoder):
    splits = labelled_splits(
        DataConfig(spec="motion:28", num_frames=2, image_size=32, keep_clips_gb=1e-5)
    )
    settings = ClassifySettings(**QUICK)
    assert share_clips(splits, settings) is settings and not splits.test.kept


def test_whitening_gives_zero_mean_and_identity_covariance():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=gen) * torch.logspace(0, 2, 8)[:, None]  # anisotropic
    tokens = torch.randn(40, 50, 8, generator=gen) @ mix + 5.0
    white = Whitening.fit(tokens.split(7), max_tokens=10**6)(tokens).reshape(-1, 8).double()
    assert white.mean(0).abs().max() < 1e-4  # float32 arithmetic
    assert torch.allclose(torch.cov(white.T), torch.eye(8, dtype=torch.double), atol=1e-4)
    # max_tokens: fitted on the first rows only, as if only they existed
    first = Whitening.fit(tokens.split(7), max_tokens=1000)
    only = Whitening.fit([tokens.reshape(-1, 8)[:1000]], max_tokens=10**6)
    assert torch.allclose(first.matrix, only.matrix, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        Whitening.fit([tokens[:1, :1]], max_tokens=10)


def test_whitening_lets_a_probe_read_a_quiet_direction():
    """The class lives in a direction 1000x quieter than a nuisance one: behind the probe's
    LayerNorm it is lost, whitened it is read."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 2
    tokens = torch.randn(256, 4, 16, generator=gen) * 0.01
    tokens[:, :, 0] += torch.randn(256, 1, generator=gen) * 100.0  # nuisance
    tokens[:, :, 1] += (labels[:, None] * 2 - 1) * 0.05  # the class
    white = Whitening.fit([tokens[:128]], max_tokens=10**6)
    accuracy = {}
    for name, prep in (("raw", lambda x: x), ("white", white)):
        torch.manual_seed(0)
        probe = AttentiveProbe(16, 2)
        opt = torch.optim.AdamW(probe.parameters(), lr=1e-2)
        for _ in range(100):
            loss = torch.nn.functional.cross_entropy(probe(prep(tokens[:128])), labels[:128])
            opt.zero_grad()
            loss.backward()
            opt.step()
        hits = probe(prep(tokens[128:])).argmax(1) == labels[128:]
        accuracy[name] = hits.float().mean().item()
    assert accuracy["white"] > 0.95 and accuracy["raw"] < 0.75, accuracy


def test_whitened_classification_says_so(encoder, motion):
    settings = ClassifySettings(**{**QUICK, "seeds": 2, "whiten": True, "whiten_tokens": 50})
    report = classify(encoder, motion, MEAN, STD, settings)
    assert report.whitened and report.to_dict()["whitened"] is True
    assert "tokens whitened" in compare({"encoder": report}).splitlines()[0]
    assert all(0 <= a <= 1 for a in report.score("attentive").accuracies)
    plain = classify(encoder, motion, MEAN, STD, ClassifySettings(**{**QUICK, "seeds": 2}))
    assert not plain.whitened and "whitened" not in compare({"encoder": plain})


def test_the_table_gives_both_errors_and_each_gap_to_random():
    def report(name, hits):
        scores = (ProbeScore("attentive", tuple(sum(h) / len(h) for h in hits), hits),)
        return ClassifyReport(name, "motion:8", ("a", "b"), 8, 4, 1, scores, "cached", {})

    student = report("encoder", ((1, 1, 1, 0), (1, 1, 0, 0)))
    random = report("random", ((0, 0, 1, 0), (0, 0, 1, 0)))
    lines = compare({"encoder": student, "random": random}).splitlines()
    assert "s.e. (clips)" in lines[1] and "vs random" in lines[1]
    row = lines[2].split()
    assert row[:5] == ["encoder", "attentive", "0.625", "+-", "0.125"]
    # Per-clip shares (1, 1, 1/2, 0): s.d. 0.479 over 4 clips.
    assert float(row[5]) == pytest.approx(0.239, abs=5e-4)
    assert (
        f"{gap_in_stderr(student.score('attentive'), random.score('attentive')):+.1f} s.e."
        in lines[2]
    )
    assert not lines[3].endswith("s.e.")  # random has no gap to itself
    assert "vs random" not in compare({"encoder": student})


@pytest.fixture(scope="module")
def export(encoder, tmp_path_factory):
    from salt.config import build_config

    cfg = build_config(
        overrides={"data.num_frames": 2, "data.image_size": 32, "student.name": "vit_tiny"}
    )
    out = tmp_path_factory.mktemp("enc") / "export"
    return write_export(out, encoder.state_dict(), encoder_config(cfg.to_dict()))


def test_cli_on_the_motion_benchmark_with_a_random_baseline(export, capsys):
    args = ["eval", "classify", str(export), "--data", "motion:28", "--seeds", "2"]
    args += ["--epochs", "2", "--workers", "0", "--baseline", "random", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"encoder", "random"}
    assert len(out["random"]["scores"]["attentive"]["accuracies"]) == 2
    assert out["encoder"]["test_clips"] == 14 and out["encoder"]["chance"] == pytest.approx(1 / 14)
    assert main(["eval", "classify", str(export), "--data", "motion:28", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "14 classes, 28 train / 14 test clips" in plan and "kept in memory" in plan


def test_labelled_video_files_from_csv_manifests(tmp_path, tiny_config, capsys):
    """A run and a checkpoint too; real mp4 files listed in CSV manifests with labels."""
    from salt.train import train

    rows = {"train": [], "test": []}
    for split, count in (("train", 3), ("test", 2)):
        for label in ("push", "pull"):
            for i in range(count):
                path = write_video(tmp_path / "v" / f"{split}_{label}{i}.mp4", n=12, seed=i)
                rows[split].append(f"{path.name},{label}")
    for split, lines in rows.items():
        (tmp_path / "v" / f"{split}.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    run = train(tiny_config).run_dir
    checkpoint = sorted((run / "checkpoints").glob("*.pt"))[-1]
    for encoder in (run, checkpoint):
        args = ["eval", "classify", str(encoder), "--train", str(tmp_path / "v" / "train.csv")]
        args += ["--test", str(tmp_path / "v" / "test.csv"), "--epochs", "2", "--seeds", "1"]
        args += ["--workers", "0", "--views", "2", "--spatial-views", "3", "--no-progress"]
        assert main(args) == 0
        table = capsys.readouterr().out
        assert "2 classes, 6 train / 4 test clips, 6 view(s) per test clip, chance 0.500" in table
        assert re.search(r"^encoder +attentive ", table, re.M) and re.search(
            r"^encoder +linear ", table, re.M
        )


def test_spatial_test_views_cover_the_long_side(tmp_path):
    from salt.data import VideoDataset
    from salt.video import View, discover

    write_video(tmp_path / "v" / "a" / "x.mp4", n=20, height=48, width=64)
    data = DataConfig(num_frames=2, image_size=32, frame_step=2)
    found = discover(str(tmp_path / "v"))
    views = VideoDataset(found, data, train=False, views_per_video=2, spatial_views=3)
    assert len(views) == 6 and views.views == 6
    crops = [View.from_dict(views[i].view).crop for i in range(6)]
    starts = [View.from_dict(views[i].view).frames[0] for i in range(6)]
    assert [c[1] for c in crops[:3]] == [0, 5, 11]  # 32 of 43 px: left, centre, right
    assert starts[:3] == [starts[0]] * 3 and starts[3] > starts[0]  # then the next position
    centre = VideoDataset(found, data, train=False)
    assert View.from_dict(centre[0].view).crop[1] == 5


def test_data_without_splits_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "videos"
    write_video(folder / "a" / "x.mp4", n=8)
    with pytest.raises(ValueError, match="give --train and --test specs"):
        labelled_splits(DataConfig(spec=str(folder), num_frames=2, image_size=32))
    with pytest.raises(ValueError, match="probes must be among"):
        ClassifySettings(probes=("knn",))


def test_spearman_and_ranks():
    from salt.eval.stats import ranks, spearman

    assert ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 6, 4]) == pytest.approx(-0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_curve_over_every_checkpoint_of_a_run(tiny_overrides, tmp_path, capsys):
    from salt.config import build_config
    from salt.train import train

    cfg = build_config(overrides={**tiny_overrides, "train.steps": 6, "train.checkpoint_every": 2})
    run = train(cfg).run_dir
    png = tmp_path / "curve.png"
    args = ["eval", "curve", str(run), "--data", "motion:28", "--seeds", "2", "--epochs", "2"]
    args += ["--max-train", "14"]  # one labelled clip per class
    args += ["--batches", "1", "--workers", "0", "--png", str(png), "--json", "--device", "cpu"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["step"] for p in out["points"]] == [2, 4, 6]
    assert out["data"] == "motion:28"
    assert all(0 <= p["accuracy"] <= 1 and p["distill_loss"] > 0 for p in out["points"])
    accuracies = {p["accuracy"] for p in out["points"]}
    if len(accuracies) == 1:  # constant: no rank correlation, and valid JSON says so
        assert out["spearman"] is None
    else:
        assert -1 <= out["spearman"] <= 1
    from PIL import Image

    assert Image.open(png).size[0] > 0 and out["png"] == str(png)
    assert all(not p["best"] for p in out["points"]) and out["pick"] is None  # no best.pt
    one = build_config(overrides={**tiny_overrides, "run.name": "one", "train.steps": 2})
    with pytest.raises(ValueError, match="a curve needs several"):
        from salt.eval.curve import checkpoint_curve

        checkpoint_curve(train(one).run_dir, data="motion:28")


def test_the_curve_scores_the_runs_own_pick_beside_its_checkpoints(tiny_overrides, tmp_path):
    """A run that kept best.pt (held-out loss at steps 3 and 6, checkpoints at 2, 4, 6): the
    curve scores it as one point, flagged, at its own step."""
    from salt.checkpoints import read_best
    from salt.config import build_config
    from salt.eval.curve import checkpoint_curve
    from salt.train import train

    overrides = {**tiny_overrides, "train.steps": 6, "train.checkpoint_every": 2}
    overrides.update({"train.eval_every": 3, "train.eval_batches": 1})
    run = train(build_config(overrides=overrides)).run_dir
    best_step = read_best(run)[0]
    settings = ClassifySettings(seeds=2, epochs=1, workers=0)
    report = checkpoint_curve(run, data="motion:28", settings=settings, distill_batches=1)
    steps = [p.step for p in report.points]
    assert steps == sorted({2, 4, 6, best_step})
    (picked,) = [p for p in report.points if p.best]
    assert picked.step == best_step and picked.checkpoint.endswith(
        ("best.pt", f"{best_step:08d}.pt")
    )
    pick = report.pick()
    top = max(report.points, key=lambda p: p.accuracy)
    assert (pick["best_step"], pick["top_step"]) == (best_step, top.step)
    assert pick["gap"] == pytest.approx(top.accuracy - picked.accuracy)
    assert pick["within_one_se"] == (pick["gap"] <= top.error)
    assert f"best (lowest held-out loss while training): step {best_step}" in report.table()


def test_the_pick_is_judged_against_the_probes_best_and_its_error():
    from salt.eval.curve import CurvePoint, CurveReport

    def report(best_accuracy):
        points = (
            CurvePoint(1000, "a", 0.5, 0.20, 0.003, 0.004),
            CurvePoint(2000, "b", 0.3, 0.25, 0.003, 0.004),  # the probe's best: error 0.005
            CurvePoint(2500, "best.pt", 0.2, best_accuracy, 0.003, 0.004, best=True),
        )
        return CurveReport("run", "attentive", "motion:28", points)

    assert report(0.246).pick()["within_one_se"] is True  # 0.004 under it
    assert report(0.244).pick()["within_one_se"] is False  # 0.006 under it
    assert report(0.26).pick()["top_step"] == 2500 and report(0.26).pick()["gap"] == 0
    assert "NOT within one s.e." in report(0.244).table()
