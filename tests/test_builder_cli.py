"""The builder's command line: flags derived from BuildOptions, what it prints, its exit codes."""

from __future__ import annotations

from dataclasses import MISSING, fields

from clipspace.settings import Settings
from index_builder.cli import parse_args
from index_builder.options import BuildOptions
from tests.conftest import TINY_ARCH, run_cli, write_corpus


def test_cli_reports_a_missing_folder_with_exit_code_2(tmp_path):
    process = run_cli("--images", str(tmp_path / "nope"), "--index", str(tmp_path / "index"))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2 and "image folder not found" in output


def test_cli_builds_and_prints_what_it_did(tmp_path):
    corpus = tmp_path / "images"
    write_corpus(corpus, ["a.jpg", "b.png"])
    (corpus / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    process = run_cli("--images", str(corpus), "--index", str(tmp_path / "index"), "--model", TINY_ARCH,
                      "--pretrained", "none", "--precision", "fp32")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "2 added" in output and "1 skipped" in output and "skipped bad.jpg" in output


def test_cli_defaults_are_the_build_options_defaults(tmp_path):
    args = parse_args([], Settings(images_dir=tmp_path, index_dir=tmp_path / "index"))
    for option in fields(BuildOptions):
        if option.default is not MISSING and option.name != "progress":  # progress is --quiet's, with the logs
            assert getattr(args, option.name) == option.default, option.name


def test_cli_no_flags_turn_off_what_build_options_turn_on(tmp_path):
    args = parse_args(["--no-jpeg-draft", "--no-patch-tokens", "--verify"], Settings())
    assert (args.jpeg_draft, args.patch_tokens, args.verify) == (False, False, True)
