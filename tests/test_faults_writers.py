"""Fault injection for what salt writes: one writer per run or cache, a ``--force`` that
replaces only salt's own output, exports replaced whole, and resumes past a damaged
checkpoint.

Each case runs the command a user would run and asserts the exit code, the one-line
message, and that every file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import (  # noqa: F401 (fixtures)
    export,
    one_line_error,
    pristine,
    run_cli,
    run_dir,
    set_flags,
    settings,
)

from salt.folders import LOCK, RUN, STALE_S, WriterLock, folder_kind

pytestmark = pytest.mark.usefixtures("one_thread_module")


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root`` (bytes) and every symlink (its target), not following
    links; a held lock's heartbeat changes, so a lock file counts by its name alone."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.name == LOCK:
            found[key] = "lock"
            continue
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


def user_folder(root: Path) -> Path:
    """A folder of the user's: sources, a hidden file, and files with salt's own names."""
    root.mkdir(parents=True)
    (root / "train.py").write_text("print('my experiment')\n")
    (root / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (root / "summary.json").write_text("{}\n")
    (root / ".notes.abc123.tmp").write_text("not salt's\n")
    (root / "data").mkdir()
    (root / "data" / "clip.bin").write_bytes(bytes(range(256)))
    return root


# ----------------------------------------------------------------------------- --force


def test_export_force_onto_a_run_is_refused_and_the_run_is_untouched(run_dir, capsys):
    before = snapshot(run_dir)
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(run_dir), "--force")
    one_line_error(
        code, err, str(run_dir), "is a salt run", "--force replaces only an earlier export"
    )
    assert snapshot(run_dir) == before


def test_export_force_onto_a_project_folder_is_one_line_error(run_dir, tmp_path, capsys):
    project = user_folder(tmp_path / "project")
    before = snapshot(project)
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(project), "--force")
    one_line_error(code, err, str(project), "files salt did not write", "data/")
    assert snapshot(project) == before


def test_export_force_replaces_an_older_export_whole(run_dir, export, tmp_path, capsys):
    old = json.loads((export / "config.json").read_text())
    code, err = run_cli(
        capsys,
        "export",
        str(run_dir),
        "--checkpoint",
        str(run_dir / "checkpoints" / "step_00000004.pt"),
        "--out",
        str(export),
    )
    one_line_error(code, err, str(export), "earlier export", "--force")
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(export), "--force")
    assert code == 0, err
    new = json.loads((export / "config.json").read_text())
    assert new["weights_sha256"] == old["weights_sha256"]  # same checkpoint, same weights
    assert sorted(p.name for p in export.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if ".salt-" in p.name]  # no staging left


def test_export_force_keeps_an_export_with_the_users_files(run_dir, export, capsys):
    (export / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    before = snapshot(export)
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(export), "--force")
    one_line_error(code, err, "files salt did not write", ".gitattributes")
    assert snapshot(export) == before


def test_a_failed_export_leaves_the_older_one_whole(run_dir, export, tmp_path, monkeypatch, capsys):
    import salt.export

    before = snapshot(export)

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(salt.export, "write_json", full_disk)  # the last file of the export
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(export), "--force")
    one_line_error(code, err, str(export), "No space left")
    assert snapshot(export) == before
    assert not [p for p in tmp_path.iterdir() if ".salt-" in p.name]


def test_train_into_a_folder_that_is_not_a_run_is_one_line_error(tmp_path, capsys):
    project = user_folder(tmp_path / "runs" / "mine")
    before = snapshot(project)
    overrides = settings(tmp_path / "runs", **{"run.name": "mine", "train.steps": 2})
    code, err = run_cli(capsys, "train", "--no-progress", *set_flags(overrides))
    one_line_error(code, err, str(project), "files salt did not write", "--run-name")
    assert snapshot(project) == before


def test_cache_build_into_a_foreign_folder_removes_nothing(tmp_path, capsys):
    folder = user_folder(tmp_path / "cache")
    (folder / ".x.salt-abc.tmp").write_text("looks like salt's, but the folder is not\n")
    before = snapshot(folder)
    flags = ["--teacher", "random:vit_tiny", "--data", "synthetic:8", "--out", str(folder)]
    code, err = run_cli(capsys, "cache", "build", *flags, "--no-progress")
    one_line_error(code, err, str(folder), "files salt did not write", "another --name/--out")
    assert snapshot(folder) == before


def test_cache_import_into_a_foreign_folder_or_a_cache_writes_nothing(tmp_path, capsys):
    for folder in (user_folder(tmp_path / "mine"), tmp_path / "cache"):
        if folder.name == "cache":
            folder.mkdir()
            (folder / "cache.json").write_text('{"format": "salt-latent-cache"}')
        before = snapshot(folder)
        argv = ["cache", "import", str(tmp_path / "old"), "--data", str(tmp_path / "videos")]
        code, err = run_cli(capsys, *argv, "--out", str(folder))
        one_line_error(code, err, str(folder), "import into a new or empty --name/--out")
        assert snapshot(folder) == before


def test_quickstart_force_onto_a_project_folder_is_one_line_error(tmp_path, capsys):
    project = user_folder(tmp_path / "project")
    (project / "runs").mkdir()
    (project / "runs" / "keep.txt").write_text("mine\n")
    before = snapshot(project)
    code, err = run_cli(capsys, "quickstart", "--fast", "--force", "--out", str(project))
    one_line_error(code, err, str(project), "not an earlier quickstart")
    assert snapshot(project) == before


def test_quickstart_force_removes_a_link_not_what_it_points_to(tmp_path):
    from salt.quickstart import check_out, remove_outputs

    outside = user_folder(tmp_path / "outside")
    before = snapshot(outside)
    out = tmp_path / "qs"
    out.mkdir()
    (out / "quickstart.json").write_text("{}")
    (out / "runs").symlink_to(outside, target_is_directory=True)
    remove_outputs(check_out(out, force=True))
    assert not (out / "runs").exists() and snapshot(outside) == before


def test_quickstart_force_keeps_the_users_files_inside_its_folders(tmp_path, capsys):
    """A file the user put inside an earlier quickstart's runs/, encoders/ or cache/ folder
    makes --force refuse, naming it, and nothing there is removed."""
    from salt.quickstart import foreign_files

    out = tmp_path / "qs"
    for folder in ("runs/teacher/checkpoints", "encoders/student", "cache"):
        (out / folder).mkdir(parents=True)
    (out / "quickstart.json").write_text("{}")
    (out / "runs/teacher/checkpoints/step_00000010.pt").write_bytes(b"weights")
    (out / "encoders/student/config.json").write_text('{"format": "salt-encoder"}')
    (out / "cache/cache.json").write_text("{}")
    assert foreign_files(out) == []
    for mine in ("runs/notes.md", "encoders/student/my-head.safetensors", "cache/plot.png"):
        (out / mine).write_text("mine\n")
        before = snapshot(out)
        code, err = run_cli(capsys, "quickstart", "--fast", "--force", "--out", str(out))
        one_line_error(code, err, mine, "did not write")
        assert snapshot(out) == before
        (out / mine).unlink()


# ----------------------------------------------------------------------------- one writer


def start_train(tmp_path: Path, steps: int) -> subprocess.Popen:
    overrides = settings(tmp_path / "runs", **{"train.steps": steps, "train.checkpoint_every": 2})
    argv = [sys.executable, "-m", "salt.cli", "train", "--no-progress", *set_flags(overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_holder(folder: Path, pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((folder / LOCK).read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never took the lock of {folder}")


def test_two_trainings_of_one_run_the_second_is_one_line_error(tmp_path):
    """Two real ``salt train`` processes with one run name: the second exits at once naming
    the first; the first's metrics are its own, one line per step, in order."""
    run = tmp_path / "runs" / "run"
    first = start_train(tmp_path, steps=2000)
    try:
        wait_for_holder(run, first.pid)
        second = start_train(tmp_path, steps=2000)
        out, err = second.communicate(timeout=300)
        line = one_line_error(second.returncode, err, str(run), f"pid {first.pid}", "salt train")
        assert socket.gethostname() in line and "choose another --run-name" in line
        assert first.poll() is None  # still training
        first.send_signal(signal.SIGTERM)  # checkpoints and stops cleanly
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and steps
    assert json.loads((run / "summary.json").read_text())["step"] == steps[-1]
    assert folder_kind(run) == RUN and "pid" not in json.loads((run / LOCK).read_text())


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from salt.folders import WriterLock; "
            "WriterLock(sys.argv[1], 'run', 'salt train').acquire(); time.sleep(600)",
            str(folder),
        ]
    )
    try:
        wait_for_holder(folder, holder.pid)
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            WriterLock(folder, RUN, "salt train").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        holder.kill()
    with WriterLock(folder, RUN, "salt train"):  # at once: the kernel dropped the lock
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()


def test_a_second_cache_build_is_refused_while_one_runs(tmp_path, capsys):
    folder = tmp_path / "cache"
    folder.mkdir()
    flags = ["--teacher", "random:vit_tiny", "--data", "synthetic:8", "--out", str(folder)]
    with WriterLock(folder, "cache", "salt cache build"):
        before = snapshot(folder)
        code, err = run_cli(capsys, "cache", "build", *flags, "--no-progress")
        one_line_error(code, err, str(folder), f"pid {os.getpid()}", "another --name/--out")
        assert snapshot(folder) == before


def write_holder(folder: Path, host: str, heartbeat: float) -> None:
    record = {"kind": "run", "command": "salt train", "pid": 99999, "host": host}
    (folder / LOCK).write_text(json.dumps({**record, "started": heartbeat, "heartbeat": heartbeat}))


def test_a_live_heartbeat_from_another_host_is_one_line_error(tmp_path, caplog):
    """Where ``flock`` does not reach across hosts, the heartbeat still refuses a second
    writer; a silent one (its host died) is taken over, with a warning."""
    folder = tmp_path / "run"
    folder.mkdir()
    write_holder(folder, "gpu-node-7", time.time() - 5)
    with pytest.raises(RuntimeError, match=r"pid 99999 on host gpu-node-7.*heartbeat \d+ s ago"):
        WriterLock(folder, RUN, "salt train").acquire()
    write_holder(folder, "gpu-node-7", time.time() - STALE_S - 1)
    with WriterLock(folder, RUN, "salt train"):
        assert json.loads((folder / LOCK).read_text())["host"] == socket.gethostname()
    assert "taking over the lock" in caplog.text


def test_without_file_locks_a_live_writer_on_this_host_is_still_refused(tmp_path, monkeypatch):
    """On a filesystem with no ``flock`` (ENOLCK), a holder on this host whose process is
    alive is refused by its record; one whose process is gone is taken over."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record = {"kind": "run", "command": "salt train", "pid": holder.pid}
        record.update(host=socket.gethostname(), started=time.time(), heartbeat=time.time())
        (folder / LOCK).write_text(json.dumps(record))
        with pytest.raises(RuntimeError, match=rf"pid {holder.pid} on host"):
            WriterLock(folder, RUN, "salt train").acquire()
    finally:
        holder.kill()
        holder.wait()
    with WriterLock(folder, RUN, "salt train"):  # its process is gone
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    folder, outside = tmp_path / "run", tmp_path / "precious.txt"
    folder.mkdir()
    outside.write_text("the user's own file")
    (folder / LOCK).symlink_to(outside)
    with pytest.raises(RuntimeError, match=r"cannot lock .*run for writing"):
        WriterLock(folder, RUN, "salt train").acquire()
    assert outside.read_text() == "the user's own file"


# ----------------------------------------------------------------------------- resume


def test_resume_auto_skips_a_truncated_newest_checkpoint(tmp_path, capsys, caplog):
    from salt.checkpoints import load_checkpoint

    overrides = settings(tmp_path / "runs", **{"train.steps": 4, "train.checkpoint_every": 2})
    flags = ["train", "--no-progress", "--resume", "auto", *set_flags(overrides)]
    assert run_cli(capsys, *flags)[0] == 0
    run = tmp_path / "runs" / "run"
    newest = run / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy cut short
    (run / "checkpoints" / "step_00000006.pt").write_bytes(b"")  # and an empty one
    code, err = run_cli(capsys, *flags)
    assert code == 0, err
    assert "step_00000004.pt" in caplog.text and "step_00000006.pt" in caplog.text
    assert "from step 2, its newest intact checkpoint" in caplog.text
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert load_checkpoint(newest)["step"] == 4  # written again, whole


def test_resume_with_no_intact_checkpoint_names_them(tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000004.pt").write_bytes(b"PK\x03\x04 cut")
    code, err = run_cli(capsys, "train", "--resume", str(run), "--no-progress")
    one_line_error(code, err, "step_00000004.pt", "reads back whole")
