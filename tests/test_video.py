"""Videos on disk (salt/video.py) and the dataset, loader and trainer that read them.

Finding videos (folder, CSV manifest, SSv2 layout), sampling views, decoding them (checked
against PyAV), the dataset's per-epoch views, unreadable files and ``data.fps``.
"""

from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from videos import write_corrupt, write_video

from salt.batch import collate
from salt.config import DataConfig, build_config
from salt.data import VideoDataset, build_source
from salt.train import TooManyBadVideos, train
from salt.video import (
    View,
    ViewMismatchError,
    decode_view,
    discover,
    frame_indices,
    open_video,
    resized_shape,
    sample_view,
)

# name -> (frames, height, width, fps): landscape, portrait, shorter than a clip, 12 fps.
# (decord 0.6 misreads a few narrow widths - 16, 24, 48, 72 px - so none are used here.)
CLIPS = {
    "cls_a/long.mp4": (60, 48, 80, 24),
    "cls_a/long.webm": (60, 48, 80, 24),
    "cls_b/short.mp4": (5, 48, 64, 24),
    "cls_b/slow.webm": (40, 96, 64, 12),
}
GEOMETRY = dict(num_frames=4, frame_step=3, image_size=32, num_workers=0)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    """A folder of class folders holding small mp4 and webm videos (see ``CLIPS``)."""
    root = tmp_path_factory.mktemp("videos")
    for seed, (name, (n, h, w, fps)) in enumerate(CLIPS.items()):
        write_video(root / name, n=n, height=h, width=w, fps=fps, seed=seed)
    return root


def data_config(spec, **changes) -> DataConfig:
    return DataConfig(spec=str(spec), **{**GEOMETRY, **changes})


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- discover: folder ------------------------------------------------------------------------


def test_a_folder_is_searched_recursively_and_class_folders_label_the_videos(tmp_path):
    for name in ("cats/a.mp4", "cats/b.webm", "dogs/c.MP4", "dogs/deeper/d.mkv", "e.webm"):
        touch(tmp_path / name)
    for name in ("notes.txt", "cats/thumb.jpg", "dogs/readme.md", "cats/a.mp4.json"):
        touch(tmp_path / name)

    found = discover(str(tmp_path))

    assert found.kind == "folder" and found.root == tmp_path.resolve()
    assert [(r.source, r.label) for r in found.records] == [
        ("cats/a.mp4", "cats"),
        ("cats/b.webm", "cats"),
        ("dogs/c.MP4", "dogs"),
        ("dogs/deeper/d.mkv", "dogs"),  # the top-level folder names the class
        ("e.webm", None),  # directly under the root: unlabelled
    ]
    assert found.path(found.records[0]) == tmp_path.resolve() / "cats" / "a.mp4"


def test_a_folder_spec_builds_a_video_dataset_with_sorted_class_indices(video_root):
    dataset = build_source(data_config(video_root), "train")
    assert isinstance(dataset, VideoDataset) and len(dataset) == len(CLIPS)
    assert dataset.classes == ["cls_a", "cls_b"]
    assert [dataset.label_id(r) for r in dataset.collection.records] == [0, 0, 1, 1]


# --- discover: CSV manifests -----------------------------------------------------------------


def test_a_space_separated_manifest_gives_paths_and_optional_labels(tmp_path):
    inside = tmp_path / "clips" / "abs.mp4"
    outside = tmp_path.parent / "elsewhere" / "far.webm"
    lines = [
        "clips/a.mp4 3",
        "",
        "clips/b.webm 12",
        f"{inside} 0",  # absolute under the manifest's folder: stored relative
        f"{outside} 7",  # absolute elsewhere: kept absolute
        "my clips/with space.mp4 4",
        "my clips/no label.webm",  # the part after the space is a file name, not a label
        "clips/c.mp4",
        "clips/d.mp4 pouring",
    ]
    manifest = tmp_path / "train.csv"
    manifest.write_text("\n".join(lines) + "\n")

    found = discover(str(manifest))

    assert found.kind == "csv" and found.root == tmp_path.resolve()
    assert [(r.source, r.label) for r in found.records] == [
        ("clips/a.mp4", 3),
        ("clips/b.webm", 12),
        ("clips/abs.mp4", 0),
        (str(outside), 7),
        ("my clips/with space.mp4", 4),
        ("my clips/no label.webm", None),
        ("clips/c.mp4", None),
        ("clips/d.mp4", "pouring"),
    ]
    assert found.path(found.records[3]) == outside


def test_a_txt_manifest_is_read_like_a_csv_one(tmp_path):
    manifest = tmp_path / "val.txt"
    manifest.write_text("v/one.mp4 1\nv/two.mp4 2\n")
    found = discover(str(manifest))
    assert [(r.source, r.label) for r in found.records] == [("v/one.mp4", 1), ("v/two.mp4", 2)]


def test_a_manifest_with_a_header_row_reads_the_path_and_label_columns(tmp_path):
    manifest = tmp_path / "data.csv"
    manifest.write_text(
        'Path,duration,Label\na/x.mp4,2.5,cat\n"b/with, comma.webm",1.0,3\nc/z.mp4,4.0,\n'
    )
    found = discover(str(manifest))
    assert found.kind == "csv"
    assert [(r.source, r.label) for r in found.records] == [
        ("a/x.mp4", "cat"),
        ("b/with, comma.webm", 3),
        ("c/z.mp4", None),
    ]


def test_a_one_column_manifest_with_a_path_header_skips_the_header(tmp_path):
    manifest = tmp_path / "paths.csv"
    manifest.write_text("path\na/x.mp4\nb/y.mp4\n")
    assert [(r.source, r.label) for r in discover(str(manifest)).records] == [
        ("a/x.mp4", None),
        ("b/y.mp4", None),
    ]


def test_a_manifest_drives_a_readable_dataset(video_root, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"{video_root / 'cls_a/long.mp4'} 5\n{video_root / 'cls_b/slow.webm'} 2\n")
    dataset = build_source(data_config(manifest), "val")
    assert [dataset[i].label for i in range(2)] == [5, 2]
    assert dataset[0].video.shape == (4, 3, 32, 32)


# --- discover: Something-Something-v2 --------------------------------------------------------

SSV2_ITEMS = [
    {
        "id": "101",
        "label": "putting a cup on a table",
        "template": "Putting [something] on [something]",
        "placeholders": ["a cup", "a table"],
    },
    {
        "id": "7",
        "label": "pushing a pen from left to right",
        "template": "Pushing [something] from left to right",
        "placeholders": ["a pen"],
    },
    {"id": "55"},  # the test split lists ids only
]


@pytest.mark.parametrize("folder", ["20bn-something-something-v2", "videos", ""])
def test_an_ssv2_list_finds_id_named_webm_files_and_maps_templates_to_labels(tmp_path, folder):
    for item in SSV2_ITEMS:
        touch(tmp_path / folder / f"{item['id']}.webm")
    listing = tmp_path / "something-something-v2-train.json"
    listing.write_text(json.dumps(SSV2_ITEMS))

    found = discover(str(listing))
    prefix = f"{folder}/" if folder else ""
    assert found.kind == "ssv2" and found.root == tmp_path.resolve()
    assert [(r.source, r.label) for r in found.records] == [
        (f"{prefix}101.webm", "Putting something on something"),
        (f"{prefix}7.webm", "Pushing something from left to right"),
        (f"{prefix}55.webm", None),
    ]
    assert all(found.path(r).is_file() for r in found.records)

    (tmp_path / "labels.json").write_text(
        json.dumps(
            {"Putting something on something": "3", "Pushing something from left to right": "17"}
        )
    )
    labelled = discover(str(listing))
    assert [r.label for r in labelled.records] == [3, 17, None]


def test_an_ssv2_layout_drives_a_readable_dataset(video_root, tmp_path):
    folder = tmp_path / "20bn-something-something-v2"
    folder.mkdir()
    (folder / "101.webm").symlink_to(video_root / "cls_a/long.webm")
    (tmp_path / "labels.json").write_text(json.dumps({"Putting something on something": "3"}))
    (tmp_path / "train.json").write_text(json.dumps(SSV2_ITEMS[:1]))
    sample = build_source(data_config(tmp_path / "train.json"), "train")[0]
    assert sample.label == 3 and sample.video.shape == (4, 3, 32, 32)


# --- discover: errors ------------------------------------------------------------------------


def test_a_missing_path_says_what_a_data_spec_may_be(tmp_path):
    spec = str(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError, match="no_such_folder.*folder of videos"):
        discover(spec)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        build_source(data_config(spec))


def test_a_folder_without_videos_is_an_error_listing_the_extensions(tmp_path):
    with pytest.raises(ValueError, match=r"no videos \(.*\.mp4.*\.webm.*\) found under"):
        discover(str(tmp_path))
    touch(tmp_path / "sub" / "notes.txt")
    touch(tmp_path / "frame.jpg")
    with pytest.raises(ValueError, match="no videos"):
        discover(str(tmp_path))


def test_a_file_of_an_unknown_kind_is_an_error(tmp_path):
    for name in ("config.yaml", "clip.mp4"):
        with pytest.raises(ValueError, match="unknown kind.*folder of videos"):
            discover(str(touch(tmp_path / name)))


def test_an_empty_manifest_or_a_json_that_is_not_ssv2_is_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        discover(str(tmp_path / "empty.csv"))
    (tmp_path / "other.json").write_text(json.dumps({"id": "1"}))
    with pytest.raises(ValueError, match="not a Something-Something-v2 list"):
        discover(str(tmp_path / "other.json"))
    for content in ([{"video": "a.webm"}], ["idx"], [{"id": "1", "template": 3}]):
        (tmp_path / "other.json").write_text(json.dumps(content))
        with pytest.raises(ValueError, match="other.json: entry 0 is not an SSv2 item"):
            discover(str(tmp_path / "other.json"))
    (tmp_path / "broken.json").write_text('[{"id": "1",')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        discover(str(tmp_path / "broken.json"))
    (tmp_path / "short.csv").write_text("label,path\npush,a.mp4\npull\n")
    with pytest.raises(ValueError, match="short.csv row 3 has no path"):
        discover(str(tmp_path / "short.csv"))


# --- frame_indices, resized_shape, sample_view -----------------------------------------------


def test_frame_indices_step_from_the_start_and_repeat_the_last_frame_past_the_end():
    assert frame_indices(100, 4, 3, 10) == (10, 13, 16, 19)
    assert frame_indices(20, 4, 4, 12) == (12, 16, 19, 19)
    assert frame_indices(5, 8, 2, 0) == (0, 2, 4, 4, 4, 4, 4, 4)
    assert frame_indices(1, 3, 5, 0) == (0, 0, 0)


@pytest.mark.parametrize(
    "height, width, side, expected",
    [
        (48, 64, 32, (32, 43)),
        (64, 48, 32, (43, 32)),
        (256, 320, 224, (224, 280)),
        (240, 320, 224, (224, 299)),
        (224, 224, 224, (224, 224)),
        (24, 32, 64, (64, 85)),  # small videos are scaled up
        (1080, 1920, 224, (224, 398)),
    ],
)
def test_resized_shape_keeps_the_aspect_ratio_with_the_short_side_at_image_size(
    height, width, side, expected
):
    rh, rw = resized_shape(height, width, side)
    assert (rh, rw) == expected
    assert min(rh, rw) == side
    # The long side is the nearest whole pixel to the exact ratio.
    assert abs(max(rh, rw) - side * max(height, width) / min(height, width)) <= 0.5


def test_short_videos_are_padded_with_their_last_frame():
    for u in (None, (0.9, 0.5, 0.5)):
        view = sample_view("s.mp4", 5, 48, 64, 8, 2, 32, u=u)
        assert view.frames == (0, 2, 4, 4, 4, 4, 4, 4)


def test_random_views_stay_inside_the_video_for_any_uniforms():
    length, height, width, frames, step, size = 50, 48, 80, 4, 3, 32
    span = (frames - 1) * step + 1
    rh, rw = resized_shape(height, width, size)
    rng = np.random.default_rng(0)
    draws = [(0.0, 0.0, 0.0), (np.nextafter(1.0, 0.0),) * 3, *rng.random((300, 3))]
    starts, lefts = set(), set()
    for u in draws:
        view = sample_view("v.mp4", length, height, width, frames, step, size, u=tuple(u))
        start = view.frames[0]
        assert 0 <= start <= length - span
        assert view.frames == tuple(range(start, start + span, step))
        top, left, h, w = view.crop
        assert (h, w) == (size, size) and view.resized == (rh, rw)
        assert 0 <= top <= rh - size and 0 <= left <= rw - size
        starts.add(start)
        lefts.add(left)
    assert starts == set(range(length - span + 1))  # every start and crop column is reachable
    assert lefts == set(range(rw - size + 1))
    assert sample_view("v.mp4", length, height, width, frames, step, size, u=(0, 0, 0)).crop[
        :2
    ] == (
        0,
        0,
    )


def test_fixed_views_take_their_position_in_the_free_range_and_a_centre_crop():
    length, step = 50, 3  # span 10, free range 40
    centre = sample_view("v.mp4", length, 48, 80, 4, step, 32)
    assert centre.frames == (20, 23, 26, 29)
    assert centre.crop == (0, (53 - 32) // 2, 32, 32) and centre.resized == (32, 53)
    assert sample_view("v.mp4", length, 48, 80, 4, step, 32, position=0.0).frames[0] == 0
    assert sample_view("v.mp4", length, 48, 80, 4, step, 32, position=1.0).frames[-1] == 49
    portrait = sample_view("v.mp4", length, 80, 48, 4, step, 32)
    assert portrait.crop == ((53 - 32) // 2, 0, 32, 32) and portrait.resized == (53, 32)


def test_views_round_trip_through_dicts():
    view = sample_view("a/b.webm", 50, 48, 80, 4, 3, 32, u=(0.2, 0.4, 0.6))
    assert View.from_dict(json.loads(json.dumps(view.as_dict()))) == view


# --- decode_view -----------------------------------------------------------------------------


def pyav_reference(path, view: View) -> np.ndarray:
    """The view decoded by PyAV and resized by PIL (bilinear, antialiased): uint8 [T, 3, h, w]."""
    import av

    image = pytest.importorskip("PIL.Image")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rh, rw = view.resized
    top, left, h, w = view.crop
    out = [
        np.asarray(image.fromarray(frames[i]).resize((rw, rh), image.BILINEAR))[
            top : top + h, left : left + w
        ]
        for i in view.frames
    ]
    return np.stack(out).transpose(0, 3, 1, 2)


def mean_abs_diff(clip: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(clip.numpy().astype(int) - reference.astype(int)).mean())


@pytest.mark.parametrize("name", ["cls_a/long.mp4", "cls_a/long.webm", "cls_b/slow.webm"])
@pytest.mark.parametrize("u", [None, (0.37, 0.5, 0.81)], ids=["centre", "random"])
def test_decode_view_matches_pyav_and_is_repeatable(video_root, name, u):
    path = video_root / name
    n, height, width, _ = CLIPS[name]
    reader = open_video(path)
    assert len(reader) == n
    view = sample_view(name, n, height, width, 4, 3, 32, u=u)

    clip = decode_view(reader, view)

    assert clip.dtype == torch.uint8 and clip.shape == (4, 3, 32, 32)
    assert torch.equal(clip, decode_view(reader, view))
    assert torch.equal(clip, decode_view(open_video(path), view))
    error = mean_abs_diff(clip, pyav_reference(path, view))
    assert error < 0.5
    # Sharp enough to see a crop one pixel off, or the next frames.
    top, left, h, w = view.crop
    nudged = attrs.evolve(view, crop=(top + (width < height), left + (width > height), h, w))
    later = attrs.evolve(view, frames=tuple(f + 1 for f in view.frames))
    for other in (nudged, later):
        assert mean_abs_diff(clip, pyav_reference(path, other)) > max(1.0, 10 * error)


def test_a_padded_view_repeats_the_last_decoded_frame(video_root):
    view = sample_view("cls_b/short.mp4", 5, 48, 64, 4, 2, 32)
    assert view.frames == (0, 2, 4, 4)
    clip = decode_view(open_video(video_root / "cls_b/short.mp4"), view)
    assert torch.equal(clip[2], clip[3]) and not torch.equal(clip[1], clip[2])


def test_a_view_past_the_last_frame_is_a_view_mismatch(video_root):
    reader = open_video(video_root / "cls_a/long.mp4")
    view = View("cls_a/long.mp4", (0, 20, 40, 60), (0, 10, 32, 32), (32, 53))
    with pytest.raises(ViewMismatchError, match="needs frame 60 but the video has 60 frames"):
        decode_view(reader, view)


def test_a_view_made_on_frames_of_another_size_is_a_view_mismatch(video_root):
    reader = open_video(video_root / "cls_a/long.mp4")
    square = View("cls_a/long.mp4", (0, 1, 2, 3), (0, 0, 32, 32), (32, 32))
    with pytest.raises(ViewMismatchError, match="frames are 48x80.*made on 32x32 frames"):
        decode_view(reader, square)
    # A view of the 48x64 video does not fit the 48x80 one either.
    other = sample_view("cls_b/short.mp4", 5, 48, 64, 4, 1, 32)
    with pytest.raises(ViewMismatchError, match="resize to 32x53"):
        decode_view(reader, other)


# --- VideoDataset ----------------------------------------------------------------------------


def test_training_views_depend_only_on_seed_epoch_and_index(video_root):
    collection = discover(str(video_root))
    data = data_config(video_root)
    dataset = VideoDataset(collection, data, seed=7, train=True)
    i = 0  # cls_a/long.mp4: 60 frames, 48x80

    first = dataset.getitem(i, 3)
    again = VideoDataset(collection, data, seed=7, train=True).getitem(i, 3)
    assert first.view == again.view and torch.equal(first.video, again.video)
    assert first.label == 0 and first.video.shape == (4, 3, 32, 32)
    assert dataset[i].view == dataset.getitem(i, 0).view

    views = [View.from_dict(dataset.getitem(i, epoch).view) for epoch in range(6)]
    assert len({(v.frames, v.crop) for v in views}) == 6  # a new view every epoch
    other_seed = VideoDataset(collection, data, seed=8, train=True).getitem(i, 3).view
    assert other_seed != first.view
    for v in views:
        assert v.frames == tuple(range(v.frames[0], v.frames[0] + 10, 3))
        assert v.resized == (32, 53) and 0 <= v.crop[1] <= 53 - 32 and v.crop[0] == 0


def test_eval_views_are_fixed_evenly_spaced_centre_crops(video_root):
    dataset = VideoDataset(
        discover(str(video_root)), data_config(video_root), train=False, views_per_video=3
    )
    assert len(dataset) == 3 * len(CLIPS)
    # Sample i is view i % 3 of video i // 3; video 0 is 60 frames, so the free range is 50.
    views = [View.from_dict(dataset.getitem(i, 0).view) for i in range(3)]
    assert [v.frames[0] for v in views] == [round(50 * (k + 0.5) / 3) for k in range(3)]
    starts = [v.frames[0] for v in views]
    assert abs((starts[1] - starts[0]) - (starts[2] - starts[1])) <= 1
    assert {v.crop for v in views} == {(0, (53 - 32) // 2, 32, 32)}
    assert {v.source for v in views} == {"cls_a/long.mp4"}
    for i in (0, 4, 11):
        a, b = dataset.getitem(i, 0), dataset.getitem(i, 5)
        assert a.view == b.view and torch.equal(a.video, b.video)
    single = VideoDataset(discover(str(video_root)), data_config(video_root), train=False)
    assert single[0].view["frames"] == [25, 28, 31, 34]  # the centre of the free range


@pytest.fixture
def folder_with_bad_files(video_root, tmp_path):
    """Two good videos, a corrupt one, an empty one and one deleted after discovery."""
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.mp4").symlink_to(video_root / "cls_a/long.mp4")
    (root / "good.webm").symlink_to(video_root / "cls_b/slow.webm")
    write_corrupt(root / "broken.mp4")
    (root / "empty.webm").write_bytes(b"")
    (root / "gone.mp4").symlink_to(video_root / "cls_a/long.mp4")
    collection = discover(str(root))
    (root / "gone.mp4").unlink()
    return collection


def test_an_unreadable_video_yields_an_error_sample_naming_the_file(folder_with_bad_files):
    dataset = VideoDataset(folder_with_bad_files, data_config("x"), train=True)
    samples = {r.source: dataset.getitem(i, 0) for i, r in enumerate(dataset.collection.records)}
    assert samples["good.mp4"].video.shape == samples["good.webm"].video.shape
    for name in ("broken.mp4", "empty.webm", "gone.mp4"):
        sample = samples[name]
        assert sample.video is None and sample.index == dataset.collection.records.index(
            next(r for r in dataset.collection.records if r.source == name)
        )
        assert name in sample.error
    assert "does not exist" in samples["gone.mp4"].error


def test_a_loader_with_two_workers_collects_unreadable_videos_into_errors(folder_with_bad_files):
    dataset = VideoDataset(folder_with_bad_files, data_config("x"), train=False)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    errors = [e for b in batches for e in b.errors]
    assert len(errors) == 3 and sum(b.size for b in batches) == 2
    for name in ("broken.mp4", "empty.webm", "gone.mp4"):
        assert sum(name in e for e in errors) == 1, (name, errors)
    for b in batches:
        assert len(b.views) == b.size
        if b.size:
            assert b.video.shape == (b.size, 4, 3, 32, 32)
            assert b.video.dtype == torch.uint8
    good = [v["source"] for b in batches for v in b.views]
    assert sorted(good) == ["good.mp4", "good.webm"]


def test_workers_forked_after_the_parent_decoded_read_their_clips(video_root):
    """PyAV >= 17 converts frames with swscale slice threads; a worker forked after the
    parent converted must neither inherit them nor hang (a timeout turns a hang into a
    failure)."""
    import av

    with av.open(str(video_root / "cls_a/long.mp4")) as container:
        next(container.decode(video=0)).to_ndarray(format="rgb24")  # PyAV's own converter
    config = data_config(video_root, decoder="pyav")
    dataset = VideoDataset(discover(str(video_root)), config, train=False)
    parent = dataset.getitem(0, 0).video  # ours, in the parent
    loader = DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        collate_fn=collate,
        timeout=60,
        multiprocessing_context="fork",
    )
    batches = list(loader)
    assert [b.size for b in batches] == [1] * len(CLIPS) and not any(b.errors for b in batches)
    assert torch.equal(batches[0].video[0], parent)


# --- data.fps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fps, name, step",
    [
        (12.0, "cls_a/long.mp4", 2),  # 24 fps video
        (6.0, "cls_a/long.mp4", 4),
        (12.0, "cls_b/slow.webm", 1),  # 12 fps video
        (8.0, "cls_a/long.webm", 3),
        (0.0, "cls_a/long.mp4", 3),  # unset: data.frame_step
    ],
)
def test_with_data_fps_set_the_frame_step_follows_the_videos_frame_rate(
    video_root, fps, name, step
):
    collection = discover(str(video_root))
    index = [r.source for r in collection.records].index(name)
    data = data_config(video_root, fps=fps)  # frame_step stays 3
    for train_views in (True, False):
        view = VideoDataset(collection, data, train=train_views).getitem(index, 1).view
        assert np.diff(view["frames"]).tolist() == [step] * 3


# --- the trainer on a folder of videos ------------------------------------------------------


def video_overrides(tiny_overrides, spec, **changes) -> dict:
    return {
        **tiny_overrides,
        "data.spec": str(spec),
        "data.num_frames": 4,
        "data.image_size": 32,
        "train.batch_size": 2,
        **changes,
    }


def test_training_on_a_folder_skips_a_corrupt_video_and_names_it_in_the_log(
    tmp_path, tiny_overrides, one_thread
):
    root = tmp_path / "train_videos"
    write_video(root / "push" / "a.mp4", n=20, seed=1)
    write_video(root / "push" / "b.webm", n=20, seed=2)
    write_video(root / "pull" / "c.mp4", n=20, seed=3)
    write_corrupt(root / "pull" / "broken.mp4")
    # Four videos, batches of two: every epoch draws all four, so the corrupt one is met.
    cfg = build_config(
        overrides=video_overrides(tiny_overrides, root, **{"train.steps": 3, "data.num_workers": 1})
    )

    result = train(cfg)

    assert result.step == 3 and result.stopped_by is None
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[-1]["bad_videos"] >= 1
    (log_file,) = result.run_dir.glob("*.log")
    text = log_file.read_text()
    assert "skipped an unreadable video" in text and "broken.mp4" in text


def test_too_many_unreadable_videos_stop_the_run_naming_the_setting(
    tmp_path, tiny_overrides, one_thread
):
    root = tmp_path / "mostly_bad"
    write_video(root / "ok.webm", n=12, seed=1)
    for i in range(11):
        write_corrupt(root / f"bad{i:02d}.mp4")
    # 12 videos in batches of 2: 20 videos are seen (when _Batches starts judging) within
    # 10 batches, i.e. after a step or two, long before 40 steps.
    cfg = build_config(
        overrides=video_overrides(
            tiny_overrides, root, **{"train.steps": 40, "data.max_bad_fraction": 0.0}
        )
    )
    with pytest.raises(
        TooManyBadVideos, match=r"of \d+ videos could not be read.*data\.max_bad_fraction=0\.0"
    ):
        train(cfg)
