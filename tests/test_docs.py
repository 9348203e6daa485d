"""Every command in the README and docs/ runs, as a reader following the guide would.

The pages run in reading order in one scratch folder (later pages use what earlier ones
made), with the virtualenv's ``salt``/``python``/``torchrun`` first on PATH. A comment line
``<!-- docs: MODE -->`` right above a code fence says how its block is checked:

- no marker (``bash``): each command runs; a failure fails the page;
- ``ci``: installs and the long quick start; ``.ci/run`` runs each command verbatim (this
  test checks that it does, and that it runs nothing but the README's two commands);
- ``install``: ``pip install -e`` of an extra, which must add nothing the README's install
  lacks, or of a local package, which is installed into the scratch folder (on its
  ``PYTHONPATH``), never into the virtualenv;
- ``dry-run``: commands that need GPUs or hours (the full recipe, 8-GPU ``torchrun``) run
  with ``--dry-run``, which checks config, data, teacher and the process group;
- ``nodes``: one command per node; all run at once, as on a cluster (with ``--dry-run``);
- ``serve``: a server command; it must print its URL, then it is stopped;
- ``file:NAME``: the block is a file the reader saves; it is written to NAME;
- ``recipe``: a TOML block that must equal the built-in recipe;
- ``excerpt:PATH``: the block is quoted from the repository file PATH, verbatim;
- ``python`` blocks run as scripts; ``text`` blocks are output and are not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest
import torch
from older_cache import write_older_cache

from salt.config import build_config, flatten

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Reading order; a page may use what the pages before it made.
PAGES = (
    "docs/install.md",
    "docs/quickstart.md",
    "docs/data.md",
    "docs/cache.md",
    "README.md",  # its main job trains from the cache docs/cache.md builds
    "docs/configs.md",
    "docs/distributed.md",
    "docs/vla.md",
    "docs/python.md",
    "docs/evaluation.md",
    "docs/results.md",
    "docs/viewer.md",
    "docs/troubleshooting.md",
    "docs/plugins.md",
    "docs/architecture.md",
)
FENCE = re.compile(
    r"^(?:<!-- docs: (?P<mode>[\w:.\-/]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M
)
DRY_RUN = re.compile(r"\b(salt|salt\.cli) (train|eval classify|quickstart)\b")


@attrs.frozen
class Block:
    page: str
    lang: str
    mode: str
    code: str

    @property
    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, comments and blanks dropped."""
        text = self.code.replace("\\\n", " ")
        lines = (re.sub(r"\s+#(\s.*)?$", "", line).strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    return [Block(page, m["lang"], m["mode"] or "", m["code"]) for m in FENCE.finditer(text)]


def test_every_docs_page_is_checked_and_linked_from_the_readme():
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    assert pages == {p for p in PAGES if p.startswith("docs/")}
    readme = (ROOT / "README.md").read_text()
    for page in pages:
        assert f"]({page})" in readme, f"README does not link {page}"
    for page in PAGES:
        for block in blocks(page):
            assert block.lang in ("bash", "python", "toml", "json", "text"), (page, block.lang)
            known = block.mode in ("", "ci", "install", "dry-run", "nodes", "serve", "recipe")
            assert known or block.mode.startswith(("file:", "excerpt:")), (page, block.mode)


def test_excerpts_quote_the_files_they_name():
    for page in PAGES:
        for block in blocks(page):
            if block.mode.startswith("excerpt:"):
                path = ROOT / block.mode.removeprefix("excerpt:")
                assert block.code in path.read_text(), (
                    f"{page}: {path} no longer holds:\n{block.code}"
                )


def test_ci_runs_the_commands_the_docs_leave_to_it():
    ci = normalize((ROOT / ".ci" / "run").read_text())
    for page in PAGES:
        for block in blocks(page):
            if block.mode == "ci":
                for command in block.commands:
                    assert normalize(command) in ci, f"{page}: .ci/run does not run {command!r}"


def test_ci_runs_the_readmes_two_commands_and_nothing_else():
    """What a newcomer runs is what CI runs: the README's quick start, verbatim; before it
    only a system package that widens coverage (Chromium)."""
    (readme,) = [b for b in blocks("README.md") if b.mode == "ci"]
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line.startswith(("python", ".venv/", "salt", "pytest"))]
    assert commands == readme.commands
    installs = [line for line in script if "pip install" in line and line not in commands]
    assert not installs, f".ci/run installs what the README does not: {installs}"


def test_install_blocks_add_nothing_the_readme_lacks():
    """An extra a page installs is inside ``dev``, so the README's install has it."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for page in PAGES:
        for block in blocks(page):
            for command in block.commands if block.mode == "install" else ():
                target = shlex.split(normalize(command))[-1]
                for extra in re.findall(r"^\.\[(.+)\]$", target)[:1]:
                    missing = set(extras[extra]) - set(extras["dev"])
                    assert not missing, f"{page}: {command!r} adds {missing}; add them to dev"


def test_the_configs_page_shows_the_built_in_recipe():
    (block,) = [b for b in blocks("docs/configs.md") if b.mode == "recipe"]
    shown = flatten(tomllib.loads(block.code))
    recipe = flatten(json.loads(json.dumps(build_config("recipe").to_dict())))  # tuples -> lists
    assert shown == {k: recipe[k] for k in shown}
    missing = sorted(set(recipe) - set(shown))
    assert not missing, f"docs/configs.md's recipe leaves out {missing}"


def normalize(text: str) -> str:
    """Commands as a reader types them in an activated virtualenv."""
    return re.sub(r"[ \t]+", " ", text.replace(".venv/bin/", ""))


# ------------------------------------------------------------------------- the guide


class Guide:
    """Runs pages in reading order in one folder, each page once."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.done: dict[str, str] = {}  # page -> its output
        self.failed: dict[str, str] = {}  # page -> why: later pages are not run on its leftovers
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "SALT_CACHE_DIR": str(workdir / "salt-cache"),
            "MASTER_ADDR": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GPUS_PER_NODE": "1",  # docs/distributed.md's multi-node example, on one CPU box
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",  # a block stopped for its time prints where it hung
        }

    def run_through(self, page: str) -> str:
        for earlier in PAGES[: PAGES.index(page) + 1]:
            if earlier in self.failed:
                raise AssertionError(
                    f"{page}: an earlier page failed, {earlier}: {self.failed[earlier]}"
                )
            if earlier not in self.done:
                try:
                    self.done[earlier] = self.run_page(earlier)
                except BaseException as err:
                    # Its half-done folder would fail every later page for the wrong reason.
                    self.failed[earlier] = str(err).splitlines()[0] if str(err) else repr(err)
                    raise
        return self.done[page]

    def run_page(self, page: str) -> str:
        self.prepare(page)
        out = []
        for block in blocks(page):
            out.append(self.run_block(block))
        return "\n".join(out)

    def prepare(self, page: str) -> None:
        """What a reader brings to a page: model weights and an older cache."""
        if page == "docs/cache.md":
            self.env["VIDEOMAE_DIR"] = str(tiny_videomae(self.workdir / "models" / "videomae"))
            # The demo geometry's 4x7x7 tokens, 32-dim latents.
            write_older_cache(
                self.workdir / "old-latents", self.workdir / "videos" / "clips", (196, 32)
            )

    def run_block(self, block: Block) -> str:
        where = f"{block.page}, block:\n{block.code}"
        if block.mode in ("ci", "recipe") or block.mode.startswith("excerpt:"):
            return ""
        if block.mode == "install":
            return "\n".join(self.install(c, where) for c in block.commands)
        if block.lang in ("text", "json", "toml") and not block.mode.startswith("file:"):
            return ""
        if block.mode.startswith("file:"):
            (self.workdir / block.mode.removeprefix("file:")).write_text(block.code)
            return ""
        if block.lang == "python":
            return self.shell(f"python - <<'PYTHON'\n{block.code}PYTHON\n", where)
        if block.mode == "serve":
            return "\n".join(self.serve(c, where) for c in block.commands)
        if block.mode == "nodes":
            return self.nodes([dry_run(c) for c in block.commands], where)
        if block.mode == "dry-run":
            return "\n".join(self.shell(dry_run(c), where) for c in block.commands)
        return self.shell(block.code, where)

    def shell(self, script: str, where: str, timeout: int = 600) -> str:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGABRT: the faulthandler of every Python process in the block prints its stacks.
            os.killpg(proc.pid, signal.SIGABRT)
            try:
                stdout, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            raise AssertionError(
                f"{where}\nstill running after {timeout} s; where it was:\n{stderr[-6000:]}"
            ) from None
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert result.returncode == 0, (
            f"{where}\nfailed ({result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
        return result.stdout

    def install(self, command: str, where: str) -> str:
        """``pip install -e X``: an extra is already in the virtualenv (``dev`` holds every
        extra's packages); a local package is built into ``site/`` here, on PYTHONPATH."""
        words = shlex.split(normalize(command))
        assert words[:3] == ["pip", "install", "-e"] and len(words) == 4, where
        if words[3].startswith(".["):
            return ""
        site = self.workdir / "site"
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), self.env.get("PYTHONPATH", "")) if p
        )
        pip = "python -m pip install -q --no-deps --no-build-isolation --no-index --target"
        return self.shell(f"{pip} {site} {shlex.quote(words[3])}", where)

    def nodes(self, commands: list[str], where: str) -> str:
        procs = [
            subprocess.Popen(
                ["bash", "-c", c],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for c in commands
        ]
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{where}\nnode failed:\n{out[-3000:]}"
            outputs.append(out)
        return "\n".join(outputs)

    def serve(self, command: str, where: str) -> str:
        proc = subprocess.Popen(
            shlex.split(command),
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if "http://" in line:
                    return "".join(lines)
            raise AssertionError(f"{where}\nexited without printing a URL:\n{''.join(lines)}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def dry_run(command: str) -> str:
    if not DRY_RUN.search(command):
        raise AssertionError(
            f"a dry-run block holds a command that is not `salt train`, `salt eval classify` "
            f"or `salt quickstart`: {command}"
        )
    # Eight processes on a 2-core machine check the same process group as two, at four
    # times the start-up (each imports torch): the guide's 8-GPU lines run with 2.
    command = re.sub(r"--nproc_per_node \d+", "--nproc_per_node 2", command)
    if re.search(r"\b(salt|salt\.cli) train\b", command):
        # The guide's toy data (tens of clips) holds less than one recipe batch per GPU,
        # which a dry run rightly refuses; one clip per process keeps the rest checked.
        return f"{command} --dry-run --set train.batch_size=1"
    return f"{command} --dry-run"


def tiny_videomae(path: Path) -> Path:
    """A small VideoMAE in the Hugging Face layout at the demo clip geometry."""
    import transformers

    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(
        image_size=112,
        num_frames=8,
        patch_size=16,
        tubelet_size=2,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        use_mean_pooling=False,
    )
    transformers.VideoMAEModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("guide")
    (workdir / "examples").symlink_to(ROOT / "examples")
    return Guide(workdir)


@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run(guide, page):
    output = guide.run_through(page)
    for expected in EXPECTED.get(page, ()):
        assert re.search(expected, output), f"{page}: no {expected!r} in:\n{output[-3000:]}"


# What a page's commands must print, beyond exiting with 0.
EXPECTED = {
    "README.md": (r"dry run: config, data, teacher and masks check out",),
    "docs/install.md": (r"salt-vla \d+\.\d+\.\d+",),
    "docs/quickstart.md": (r"probes \(accuracy\)", r"everything is under"),
    "docs/data.md": (r"wrote \d+ videos per layout", r"run runs/folder-demo: step 5"),
    "docs/cache.md": (
        r"OK \(\d+ clips, checksums and shapes match\)",
        r"run runs/from-cache: step 5",
    ),
    "docs/configs.md": (r"profile recipe", r"run runs/lr-sweep: step 5", r"best held-out"),
    "docs/distributed.md": (r"2 process\(es\)", r"run runs/ddp-demo: step 4"),
    "docs/vla.md": (
        r"tokens \(2, 196, 192\)",
        r"layers 13 image \(2, 49, 192\)",
        r"random init, same architecture",
    ),
    "docs/evaluation.md": (
        r"loss / E\[x\^2\]\s+\d\.\d+",
        r"recorded 2 result\(s\) into encoders/vla-demo",
        r"time-arrow",
    ),
    "docs/results.md": (r"dry run: config, data, teacher and masks check out",),
    "docs/viewer.md": (r"http://127\.0\.0\.1:\d+",),
    "docs/troubleshooting.md": (r"torch",),
    "docs/plugins.md": (
        r"interleave",
        r"smooth_l1",
        r"predicted slices: 1 3 5 7",
        r"run runs/interleave: step 5",
    ),
}


def test_the_evaluation_guide_stays_a_guide():
    """How to evaluate fits in under 200 lines; the measurements live in docs/results.md."""
    lines = (ROOT / "docs" / "evaluation.md").read_text().splitlines()
    assert len(lines) < 200, f"docs/evaluation.md has {len(lines)} lines: move tables to results.md"
    assert "results.md" in "\n".join(lines)
