"""metrics.jsonl: appending and truncating, reading curves back (a torn last line is
skipped, any other bad line named), and the loss summary."""

from __future__ import annotations

import json
import logging
import math

import pytest

from salt.metrics import MetricsLog, read_records, read_series, summarize


def records(losses):
    return [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


LOGGED = [
    {"step": 1, "loss": 2.0, "loss/mse": 1.5, "lr": 1e-4, "grad_norm": 3.0, "mfu": 0.1},
    {"step": 2, "loss": math.nan, "loss/mse": math.inf, "lr": 2e-4, "grad_norm": 2.0},
    {"step": 3, "loss": 1.0, "loss/mse": 0.5, "lr": 3e-4, "clips_per_s": 8, "note": "x"},
    {"step": 4, "loss": 0.8, "lr": 3e-4, "bad": True, "nothing": None},
]


def test_summary_of_a_falling_loss_has_no_rebound():
    s = summarize(records([4.0, 3.0, 2.0, 1.5, 1.2, 1.0]), smoothing=0.5)
    assert s["min_loss"] == 1.0 and s["min_loss_step"] == 6
    assert s["first_loss"] == 4.0 and s["last_loss"] == 1.0
    assert s["rebound"] == 0.0 and s["late_rebound"] is False
    assert s["smoothed_loss"] == pytest.approx(
        0.5 * (0.5 * (0.5 * (0.5 * (0.5 * 4 + 1.5) + 1.0) + 0.75) + 0.6) + 0.5
    )


def test_summary_flags_a_late_rebound():
    s = summarize(
        records([4.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0]), smoothing=0.5, rebound_threshold=0.05
    )
    assert s["min_loss"] == 1.0 and s["min_loss_step"] == 3
    assert s["smoothed_min_step"] < 7
    assert s["rebound"] > 0.05 and s["late_rebound"] is True
    assert s["rebound"] == pytest.approx(
        (s["smoothed_loss"] - s["smoothed_min_loss"]) / s["smoothed_min_loss"]
    )


def test_summary_of_nothing_logged():
    assert summarize([]) == {"steps_logged": 0}


def test_metrics_truncate_after_a_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for r in records([3.0, 2.0, 1.0]):
        log.append(r)
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]


def test_series_hold_the_finite_numbers_of_each_requested_key():
    series = read_series(LOGGED, keys=["loss", "loss/*", "lr"])
    assert series == {
        "loss": [(1, 2.0), (3, 1.0), (4, 0.8)],
        "loss/mse": [(1, 1.5), (3, 0.5)],
        "lr": [(1, 1e-4), (2, 2e-4), (3, 3e-4), (4, 3e-4)],
    }
    assert all(type(s) is int and type(v) is float for pts in series.values() for s, v in pts)


def test_series_of_every_numeric_key_by_default():
    series = read_series(LOGGED)
    # In first-logged order; never step, strings, bools or None.
    assert list(series) == ["loss", "loss/mse", "lr", "grad_norm", "mfu", "clips_per_s"]
    assert series["grad_norm"] == [(1, 3.0), (2, 2.0)]
    assert series["clips_per_s"] == [(3, 8.0)]
    assert read_series(LOGGED, keys=["grad_norm"]) == {"grad_norm": [(1, 3.0), (2, 2.0)]}
    assert read_series(LOGGED, keys=["missing"]) == {}


def test_series_read_from_a_file_equal_those_from_its_records(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in LOGGED:
        log.append(record)
    assert read_series(log.path) == read_series(LOGGED)
    assert read_series(str(log.path), keys=["lr"]) == read_series(LOGGED, keys=["lr"])


def test_a_torn_last_line_is_skipped_with_a_warning_naming_the_file(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(LOGGED[0]) + "\n" + json.dumps(LOGGED[2]) + '\n{"step": 5, "lo')
    with caplog.at_level(logging.WARNING, logger="salt.metrics"):
        series = read_series(path, keys=["loss"])
    assert series == {"loss": [(1, 2.0), (3, 1.0)]}
    assert str(path) in caplog.text and "line 3" in caplog.text
    assert [r["step"] for r in MetricsLog(path).read()] == [1, 3]


def test_a_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = write_lines(
        tmp_path / "metrics.jsonl", ['{"step": 1, "loss": 1.0}', "", "{oops", '{"step": 2}']
    )
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 3 is not a JSON object") as err:
        read_series(path)
    assert str(path) in str(err.value) and "{oops" in str(err.value)
    path = write_lines(path, ["[1, 2]", '{"step": 2}'])
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        read_records(path)


def test_blank_lines_and_an_empty_file_read_as_nothing(tmp_path):
    path = write_lines(tmp_path / "metrics.jsonl", ["", '{"step": 1, "loss": 1.0}', "  "])
    assert read_records(path) == [{"step": 1, "loss": 1.0}]
    path.write_text("")
    assert read_records(path) == [] and read_series(path) == {}
    assert MetricsLog(tmp_path / "not_yet.jsonl").read() == []
