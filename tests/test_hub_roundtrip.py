"""Patch, push, download and load again, against the local Hub server with the real client."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from panacea_patch.cli.main import main

from panacea_patch import patch
from panacea_patch.card import MARKER, is_generated_card
from panacea_patch.errors import InputError
from panacea_patch.hub import download_snapshot
from panacea_patch.provenance import PROVENANCE_FILE, read_provenance
from panacea_patch.publish import CHART_FILE
from tests.helpers import dir_hashes
from tests.hub_server import HubServer, read_tree, require_lfs_uploads

ORG = "panacea-org"
FAKE_TOKEN = "hf_FAKEtoken_roundtrip_leakcheck_7Q2"
INPUT_IDS = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])


@pytest.fixture(autouse=True)
def _restore_cli_logging() -> Iterator[None]:
    """The CLI installs a handler on the stream CliRunner swaps in; put the logger back after."""
    logger = logging.getLogger("panacea_patch")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


@pytest.fixture
def hub(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The server, with uploads on the LFS path and HF_TOKEN set to a write token."""
    require_lfs_uploads()
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server


@pytest.fixture(scope="module")
def patched_llama(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("patched") / "llama-panacea"
    patch(llama_dir, out, method="random", rho=0.3, progress=False)
    return out


@pytest.fixture
def output(patched_llama: Path, tmp_path: Path) -> Path:
    """A fresh copy of a patched output, for tests that push or change it."""
    out = tmp_path / "llama-panacea"
    shutil.copytree(patched_llama, out)
    return out


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def download(hub: HubServer, repo_id: str, dest: Path, *, revision: str = "main") -> Path:
    """The repo through the real client's own snapshot_download (not panacea_patch.hub)."""
    folder = snapshot_download(
        repo_id, revision=revision, endpoint=hub.url, token=hub.token, cache_dir=dest
    )
    return Path(folder)


def pushed_files(hub: HubServer, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    files = hub.files(repo_id, revision)
    files.pop(".gitattributes", None)
    return files


def causal_lm_logits(model_dir: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(INPUT_IDS).logits


def adapter_logits(base_dir: Path, adapter_dir: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        return model(INPUT_IDS).logits


def recorded_weights_intact(out: Path) -> bool:
    """Every output file whose hash the record holds still has it (nothing was rewritten)."""
    record = read_provenance(out) or {}
    hashes = dir_hashes(out)
    expected = record.get("output_files") or {}
    return bool(expected) and all(
        hashes.get(name) == str(digest).removeprefix("sha256:") for name, digest in expected.items()
    )


# ---------------------------------------------------------------------------- round trips


def test_full_model_round_trip(hub: HubServer, llama_dir: Path, tmp_path: Path):
    repo = f"{ORG}/llama-panacea"
    out = tmp_path / "out"
    result = patch(
        llama_dir, out, method="random", rho=0.3, progress=False, push_to_hub=repo, token=hub.token
    )
    assert result.push is not None
    sha = hub.head(repo)
    assert result.push["commit_url"] == f"{hub.url}/{repo}/commit/{sha}"
    assert result.push["repo_url"] == f"{hub.url}/{repo}" and result.push["pr_url"] is None
    commit = hub.repo(repo).commits[sha]
    assert (
        commit.title.startswith("Add a panacea-patch") and "method=random, rho=0.3" in commit.title
    )
    assert pushed_files(hub, repo) == read_tree(out)
    assert {CHART_FILE, "README.md", PROVENANCE_FILE} <= set(pushed_files(hub, repo))
    local = causal_lm_logits(out)
    assert torch.equal(causal_lm_logits(download(hub, repo, tmp_path / "dl")), local)
    assert not torch.equal(causal_lm_logits(llama_dir), local)  # the patch changed the model


def test_adapter_round_trip_with_peft(
    hub: HubServer, lora_dir: Path, llama_dir: Path, tmp_path: Path
):
    repo = f"{ORG}/lora-panacea"
    out = tmp_path / "out"
    patch(lora_dir, out, method="random", rho=0.3, progress=False, push_to_hub=repo)
    downloaded = download(hub, repo, tmp_path / "dl")
    assert (downloaded / "adapter_model.safetensors").read_bytes() == (
        out / "adapter_model.safetensors"
    ).read_bytes()
    local = adapter_logits(llama_dir, out)
    assert torch.equal(adapter_logits(llama_dir, downloaded), local)
    assert not torch.equal(adapter_logits(llama_dir, lora_dir), local)
    card = ModelCard.load(downloaded / "README.md")
    assert card.data.library_name == "peft" and "peft" in card.data.tags
    assert card.data.base_model is None  # the base is a local path: not a Hub id


def test_source_at_a_revision_and_the_card_on_the_hub(
    hub: HubServer, llama_dir: Path, tmp_path: Path
):
    src, dst = f"{ORG}/llama-ft", f"{ORG}/llama-ft-panacea"
    hub.create_repo(src)
    hub.seed_files(src, {"config.json": "{}"})  # main is not a usable checkpoint
    files = dict(read_tree(llama_dir))
    files["README.md"] = b"---\nlicense: mit\ntags: [chat]\n---\n# llama-ft\n\nTheir text.\n"
    files["pytorch_model.bin"] = b"\x80\x04pickle"  # must not be downloaded
    files["modeling_evil.py"] = b"raise SystemExit"
    hub.seed_files(src, files, branch="ft")
    out = tmp_path / "out"
    result = cli(
        "patch", f"{src}@ft", "--out", out, "--method", "random", "--rho", "0.3",
        "--push-to-hub", dst, "--hub-revision", "patched", "--commit-message", "patched ft",
        "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sha = hub.head(dst, "patched")
    assert f"Pushed {hub.url}/{dst}/commit/{sha}" in result.stdout
    assert hub.repo(dst).commits[sha].title == "patched ft"
    source = (read_provenance(out) or {})["source"]
    assert source["repo_id"] == src and source["revision"] == "ft"
    assert source["commit_sha"] == hub.head(src, "ft") != hub.head(src)
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.route == "resolve"}
    assert "pytorch_model.bin" not in fetched and "modeling_evil.py" not in fetched

    card = ModelCard.load(download(hub, dst, tmp_path / "dl", revision="patched") / "README.md")
    assert card.data.base_model == src
    assert {"panacea-patch", "safety", "chat"} <= set(card.data.tags)
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert card.data.eval_results is None
    assert "Their text." in card.text and f"`{source['commit_sha']}`" in card.text

    # Metrics written afterwards (here by hand) reach the pushed card's eval results.
    record = read_provenance(out) or {}
    record["metrics"] = {
        "before": {"harmful_score": 75.0, "task_accuracy": 60.0},
        "after": {"harmful_score": 3.0, "task_accuracy": 59.5},
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(record, indent=2))
    assert cli("push", out, dst, "--revision", "patched").exit_code == 0
    card = ModelCard.load(download(hub, dst, tmp_path / "dl2", revision="patched") / "README.md")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {
        "harmful_score": 3.0,
        "harmful_score_before": 75.0,
        "task_accuracy": 59.5,
        "task_accuracy_before": 60.0,
    }
    assert card.data.base_model == src and card.data.license == "mit"


@pytest.mark.parametrize(
    ("spec", "setup", "message"),
    [
        (f"{ORG}/absent", None, f"Hub repository {ORG}/absent was not found"),
        (f"{ORG}/src@nope", "public", f"revision 'nope' was not found in {ORG}/src"),
        (f"{ORG}/src", "gated", f"{ORG}/src is a gated repository and no token was sent"),
    ],
)
def test_cli_hub_source_errors_exit_2(
    hub_server: HubServer, tmp_path: Path, spec: str, setup: str | None, message: str
):
    if setup:
        hub_server.create_repo(f"{ORG}/src", gated="manual" if setup == "gated" else False)
        hub_server.seed_files(f"{ORG}/src", {"config.json": "{}"})
    result = cli("patch", spec, "--out", tmp_path / "out", "--method", "random", "--json")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Fix:" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2
    assert not (tmp_path / "out").exists()


def test_a_hub_source_without_usable_files_is_an_input_error(hub_server: HubServer, tmp_path: Path):
    hub_server.create_repo(f"{ORG}/pickles")
    hub_server.seed_files(f"{ORG}/pickles", {"pytorch_model.bin": b"\x80\x04"})
    result = cli("patch", f"{ORG}/pickles", "--out", tmp_path / "out", "--method", "random")
    assert result.exit_code == 2, result.output
    assert "has no files that panacea-patch reads" in result.stderr
    assert "--allow-pickle" in result.stderr


# ---------------------------------------------------------------------------- push options


def test_private_push_and_anonymous_reads_fail(
    hub: HubServer, output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    repo = f"{ORG}/private-panacea"
    result = cli("push", output, repo, "--private", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    sha = hub.head(repo)
    assert answer["commit_url"] == f"{hub.url}/{repo}/commit/{sha}"
    assert answer["repo_url"] == f"{hub.url}/{repo}" and answer["pr_url"] is None
    assert hub.repo(repo).private

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(repo, endpoint=hub.url, token=False, cache_dir=tmp_path / "anon")
    with pytest.raises(InputError) as err:
        download_snapshot(repo)
    assert "private and no token was sent" in str(err.value)
    result = cli("patch", repo, "--out", tmp_path / "again", "--method", "random", "--rho", "0.3")
    assert result.exit_code == 2
    assert f"Hub repository {repo} was not found, or it is private" in result.stderr
    assert "HF_TOKEN" in result.stderr
    assert not (tmp_path / "again").exists()


def test_push_can_open_a_pull_request(hub: HubServer, output: Path):
    repo = f"{ORG}/pr-panacea"
    hub.create_repo(repo)
    result = cli("push", output, repo, "--create-pr")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Opened pull request {hub.url}/{repo}/discussions/1"
    assert pushed_files(hub, repo, "refs/pr/1") == read_tree(output)
    assert set(pushed_files(hub, repo)) == set()  # main is untouched


def test_a_user_readme_is_pushed_as_written_unless_asked(hub: HubServer, output: Path):
    repo = f"{ORG}/readme-panacea"
    (output / "README.md").write_text("# My model\n\nNotes I wrote.\n")
    assert cli("push", output, repo).exit_code == 0
    assert pushed_files(hub, repo)["README.md"] == b"# My model\n\nNotes I wrote.\n"
    assert (output / "README.md").read_text() == "# My model\n\nNotes I wrote.\n"
    assert cli("push", output, repo, "--overwrite-readme").exit_code == 0
    assert is_generated_card(pushed_files(hub, repo)["README.md"].decode())
    assert (output / "README.md").read_bytes() == pushed_files(hub, repo)["README.md"]


# ---------------------------------------------------------------------------- failure and retry


def test_a_failed_upload_keeps_the_output_and_push_completes_it(
    hub: HubServer, llama_dir: Path, tmp_path: Path
):
    repo = f"{ORG}/retry-panacea"
    out = tmp_path / "out"
    # Uploads go one LFS object at a time: the first gets through, the storage refuses the next.
    hub.fail("lfs_put", status=403, skip=1, message="Request has expired")
    result = cli(
        "patch", llama_dir, "--out", out, "--method", "random", "--rho", "0.3",
        "--push-to-hub", repo, "-q",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"the patched model was written to {out}, but the push failed" in result.stderr
    assert f"the local output in {out} is intact" in result.stderr
    assert f"`panacea-patch push {out} {repo}`" in result.stderr
    assert recorded_weights_intact(out)
    assert is_generated_card((out / "README.md").read_text())
    assert hub.head(repo) == hub.repo(repo).branches["main"]
    assert set(pushed_files(hub, repo)) == set()  # nothing was committed
    assert len(hub.lfs_objects(repo)) == 1
    puts = hub.count("lfs_put")

    before = dir_hashes(out)
    result = cli("push", out, repo)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Pushed {hub.url}/{repo}/commit/{hub.head(repo)}"
    assert hub.count("lfs_put") == puts + 1  # only the object that was missing
    assert pushed_files(hub, repo) == read_tree(out)
    assert dir_hashes(out) == before


def test_the_token_never_leaks(hub: HubServer, llama_dir: Path, tmp_path: Path):
    """The real console command in a subprocess, verbose, through a failure and a retry."""
    hub.add_token(FAKE_TOKEN, hub.user, orgs=(hub.org,))
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "PYTHONWARNINGS": "ignore"}
    repo, out = f"{ORG}/leak-panacea", tmp_path / "out"
    hub.fail("commit", status=500, message=f"server echo {FAKE_TOKEN}")
    patch_args = ["patch", str(llama_dir), "--out", str(out), "--method", "random"]
    patch_args += ["--rho", "0.3", "--push-to-hub", repo, "-vv"]
    runs = [
        subprocess.run(
            [sys.executable, "-m", "panacea_patch.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        for args in (patch_args, ["push", str(out), repo, "-vv", "--json"])
    ]
    assert runs[0].returncode == 1, runs[0].stderr
    assert "server echo ***" in runs[0].stderr  # the echo reached the message, scrubbed
    assert runs[1].returncode == 0, runs[1].stderr
    assert json.loads(runs[1].stdout)["commit_url"].endswith(hub.head(repo))
    assert any(r.user == hub.user and r.route == "commit" for r in hub.requests)
    texts = [run.stdout + run.stderr for run in runs]
    texts += [data.decode("utf-8", "replace") for data in read_tree(out).values()]
    texts += [data.decode("utf-8", "replace") for data in pushed_files(hub, repo).values()]
    for text in texts:
        assert FAKE_TOKEN not in text
        assert FAKE_TOKEN.removeprefix("hf_") not in text
    assert MARKER in (out / "README.md").read_text()
