"""panacea_patch.hub against the local Hub server, through the real huggingface_hub client."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # read by huggingface_hub at import

import hashlib
import io
import logging
import socket
import traceback
from pathlib import Path

import pytest

from panacea_patch import hub, hub_push
from panacea_patch.errors import InputError, PanaceaError, RuntimeFailure
from panacea_patch.hub import (
    PushResult,
    download_snapshot,
    parse_hub_id,
    push_folder,
    scrub_secrets,
)
from tests.hub_server import (
    HubServer,
    read_tree,
    require_lfs_uploads,
    write_tiny_checkpoint,
)
from tests.hub_server import hub_server as hub_server  # the fixture, until conftest imports it

REPO = "panacea-org/tiny-ft"
OUT_REPO = "panacea-org/tiny-ft-panacea"
FAKE_TOKEN = "hf_FAKEtoken_leakcheck_123"


@pytest.fixture
def seeded(hub_server: HubServer) -> HubServer:
    """A public source repo: main has v1 weights, branch ``dev`` has v2."""
    hub_server.create_repo(REPO)
    hub_server.seed_files(REPO, {"config.json": '{"v": 1}', "model.safetensors": b"\0weights-1"})
    hub_server.seed_files(REPO, {"config.json": '{"v": 2}'}, branch="dev")
    return hub_server


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    write_tiny_checkpoint(folder)
    return folder


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def digest_tree(folder: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in read_tree(folder).items()}


# ---------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("org/name", ("org/name", None)),
        ("meta-llama/Llama-3.1-8B@main", ("meta-llama/Llama-3.1-8B", "main")),
        ("org/name@refs/pr/3", ("org/name", "refs/pr/3")),
        ("org/name@feature/x", ("org/name", "feature/x")),
        ("org/m_1.5@" + "a" * 40, ("org/m_1.5", "a" * 40)),
        ("name", None),
        ("./org/name", None),
        ("/abs/path", None),
        ("org/name/extra", None),
        ("org/name@", None),
        ("org/name@a b", None),
        ("org/name@../x", None),
        ("org--x/name", None),
        ("org/name.git", None),
        ("org/-name", None),
        ("~/models/x", None),
    ],
)
def test_parse_hub_id(spec: str, expected: tuple[str, str | None] | None):
    assert parse_hub_id(spec) == expected


# ---------------------------------------------------------------------------- download


def test_download_at_a_branch_returns_the_resolved_commit(seeded: HubServer, tmp_path: Path):
    path, sha = download_snapshot(REPO, revision="dev")
    assert sha == seeded.head(REPO, "dev") != seeded.head(REPO)
    assert (path / "config.json").read_text() == '{"v": 2}'
    # HF_HOME is read now, not when huggingface_hub was imported.
    assert path.is_relative_to(Path(os.environ["HF_HOME"]) / "hub")


def test_download_default_branch_and_by_sha_with_patterns(seeded: HubServer):
    path, sha = download_snapshot(REPO)
    assert sha == seeded.head(REPO)
    assert (path / "model.safetensors").read_bytes() == b"\0weights-1"
    dev = seeded.head(REPO, "dev")
    path, sha = download_snapshot(REPO, revision=dev, allow_patterns=["*.json"])
    assert sha == dev
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]


def test_source_patterns_fetch_what_a_run_needs_and_no_pickles(hub_server: HubServer):
    hub_server.create_repo(REPO)
    needed = ["config.json", "model.safetensors", "tokenizer.json", "README.md", "LICENSE"]
    skipped = ["pytorch_model.bin", "modeling_custom.py", "original/consolidated.pth"]
    hub_server.seed_files(REPO, {name: b"x" for name in needed + skipped})
    path, _ = download_snapshot(REPO, allow_patterns=hub.SOURCE_ALLOW_PATTERNS)
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == (
        sorted(needed)
    )


def test_missing_repo_names_the_repo_and_the_fix(seeded: HubServer):
    with pytest.raises(InputError) as err:
        download_snapshot("panacea-org/absent")
    text = str(err.value)
    assert err.value.exit_code == 2
    assert "panacea-org/absent was not found" in text
    assert "hf auth login" in text and "HF_TOKEN" in text


def test_missing_revision_is_an_input_error(seeded: HubServer):
    with pytest.raises(InputError) as err:
        download_snapshot(REPO, revision="no-such-branch")
    assert "revision 'no-such-branch' was not found in panacea-org/tiny-ft" in str(err.value)
    assert f"{REPO}@REVISION" in str(err.value)


def test_private_repo_needs_a_token(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch):
    hub_server.create_repo(REPO, private=True)
    hub_server.seed_files(REPO, {"config.json": "{}"})
    with pytest.raises(InputError) as err:
        download_snapshot(REPO)
    assert "private" in str(err.value) and "no token was sent" in str(err.value)
    assert "HF_TOKEN" in str(err.value)
    with pytest.raises(InputError) as err:
        download_snapshot(REPO, token=hub_server.outsider_token)
    assert "the token has no access to it" in str(err.value)
    monkeypatch.setenv("HF_TOKEN", hub_server.read_token)
    path, sha = download_snapshot(REPO)
    assert sha == hub_server.head(REPO) and (path / "config.json").exists()


def test_saved_login_under_hf_home_is_used(hub_server: HubServer):
    hub_server.create_repo(REPO, private=True)
    (Path(os.environ["HF_HOME"]) / "token").write_text(hub_server.read_token + "\n")
    _, sha = download_snapshot(REPO)
    assert sha == hub_server.head(REPO)


def test_gated_repo_says_it_is_gated_and_where_to_ask(hub_server: HubServer):
    hub_server.create_repo(REPO, gated="manual")
    hub_server.seed_files(REPO, {"config.json": "{}"})
    with pytest.raises(InputError) as err:
        download_snapshot(REPO)
    text = str(err.value)
    assert "is a gated repository and no token was sent" in text
    assert f"request access at {hub_server.url}/{REPO}" in text
    with pytest.raises(InputError) as err:
        download_snapshot(REPO, token=hub_server.outsider_token)
    assert "this token has not been granted access" in str(err.value)
    hub_server.grant_access(REPO, "outsider")
    assert download_snapshot(REPO, token=hub_server.outsider_token)[1] == hub_server.head(REPO)


def test_rejected_token_is_an_input_error(seeded: HubServer):
    with pytest.raises(InputError) as err:
        download_snapshot(REPO, token="hf_notARealToken")
    assert "rejected the credentials" in str(err.value)


def test_server_error_is_a_runtime_failure(seeded: HubServer):
    seeded.fail("repo_info", status=500)
    with pytest.raises(RuntimeFailure) as err:
        download_snapshot(REPO)
    assert err.value.exit_code == 1
    assert "failed while serving" in str(err.value) and "HTTP 500" in str(err.value)


def test_unreachable_hub_is_a_runtime_failure(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
):
    dead = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(RuntimeFailure) as err:
        download_snapshot(REPO)
    assert f"cannot reach the Hub at {dead}" in str(err.value)
    assert "HF_HUB_OFFLINE=1" in str(err.value)


def test_offline_mode_uses_the_cache_and_never_the_network(
    seeded: HubServer, monkeypatch: pytest.MonkeyPatch
):
    path, sha = download_snapshot(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seeded.fail("*", status=500, times=None)
    requests_before = len(seeded.requests)
    assert download_snapshot(REPO) == (path, sha)
    assert len(seeded.requests) == requests_before
    with pytest.raises(RuntimeFailure) as err:
        download_snapshot(REPO, revision="dev")
    assert "HF_HUB_OFFLINE is set" in str(err.value)
    assert len(seeded.requests) == requests_before
    seeded.clear_failures()


def test_download_rejects_a_spec_with_revision(hub_server: HubServer):
    with pytest.raises(InputError, match="not a Hub repository id"):
        download_snapshot(f"{REPO}@main")


# ---------------------------------------------------------------------------- push


def test_push_creates_a_private_repo_and_round_trips(hub_server: HubServer, out_dir: Path):
    require_lfs_uploads()
    result = push_folder(out_dir, OUT_REPO, private=True, token=hub_server.token)
    assert isinstance(result, PushResult)
    assert result.commit_sha == hub_server.head(OUT_REPO)
    assert result.commit_url == f"{hub_server.url}/{OUT_REPO}/commit/{result.commit_sha}"
    assert result.repo_url == f"{hub_server.url}/{OUT_REPO}"
    assert result.pr_url is None
    assert hub_server.repo(OUT_REPO).private
    assert hub_server.count("lfs_put") == 2
    path, sha = download_snapshot(OUT_REPO, token=hub_server.token)
    assert sha == result.commit_sha
    got = read_tree(path)
    got.pop(".gitattributes")
    assert got == read_tree(out_dir)


def test_push_uses_hf_token_and_creates_the_branch(
    hub_server: HubServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    require_lfs_uploads()
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    hub_server.create_repo(OUT_REPO)
    main = hub_server.head(OUT_REPO)
    result = push_folder(out_dir, OUT_REPO, revision="panacea", commit_message="patched")
    assert hub_server.head(OUT_REPO, "panacea") == result.commit_sha
    assert hub_server.head(OUT_REPO) == main
    assert hub_server.repo(OUT_REPO).commits[result.commit_sha].title == "patched"
    (out_dir / "config.json").write_text('{"changed": true}')
    again = push_folder(out_dir, OUT_REPO, revision="panacea")
    assert again.commit_sha == hub_server.head(OUT_REPO, "panacea") != result.commit_sha


def test_push_can_open_a_pull_request(hub_server: HubServer, out_dir: Path):
    require_lfs_uploads()
    hub_server.create_repo(OUT_REPO)
    main = hub_server.head(OUT_REPO)
    result = push_folder(out_dir, OUT_REPO, create_pr=True, token=hub_server.token)
    assert result.pr_url == f"{hub_server.url}/{OUT_REPO}/discussions/1"
    assert hub_server.head(OUT_REPO) == main
    assert hub_server.head(OUT_REPO, "refs/pr/1") == result.commit_sha


def test_push_rejects_bad_arguments(hub_server: HubServer, out_dir: Path):
    with pytest.raises(InputError, match="pull request"):
        push_folder(out_dir, OUT_REPO, revision="dev", create_pr=True, token=hub_server.token)
    with pytest.raises(InputError, match="not a directory"):
        push_folder(out_dir / "missing", OUT_REPO, token=hub_server.token)
    with pytest.raises(InputError, match="not a Hub repository id"):
        push_folder(out_dir, "no-namespace", token=hub_server.token)
    with pytest.raises(InputError, match="commit sha"):
        push_folder(out_dir, OUT_REPO, revision="a" * 40, token=hub_server.token)
    assert hub_server.count("commit") == 0


def test_failed_commit_keeps_the_output_and_a_retry_completes(hub_server: HubServer, out_dir: Path):
    require_lfs_uploads()
    before = digest_tree(out_dir)
    hub_server.fail("commit", status=500)
    with pytest.raises(RuntimeFailure) as err:
        push_folder(out_dir, OUT_REPO, revision="v2", token=hub_server.token)
    text = str(err.value)
    assert err.value.exit_code == 1
    assert f"the local output in {out_dir} is intact" in text
    assert f"`panacea-patch push {out_dir} {OUT_REPO} --revision v2`" in text
    assert digest_tree(out_dir) == before
    assert hub_server.head(OUT_REPO, "v2") == hub_server.head(OUT_REPO)  # nothing committed
    puts = hub_server.count("lfs_put")
    result = push_folder(out_dir, OUT_REPO, revision="v2", token=hub_server.token)
    assert hub_server.count("lfs_put") == puts  # the objects were already there
    assert hub_server.head(OUT_REPO, "v2") == result.commit_sha
    assert {k: v for k, v in hub_server.files(OUT_REPO, "v2").items() if k != ".gitattributes"} == (
        read_tree(out_dir)
    )


def test_a_failure_mid_upload_then_a_retry_sends_only_what_is_missing(
    hub_server: HubServer, out_dir: Path
):
    require_lfs_uploads()
    # The first weight file gets through, the second one's PUT is refused by the storage.
    hub_server.fail("lfs_put", status=403, skip=1, message="Request has expired")
    with pytest.raises(RuntimeFailure) as err:
        push_folder(out_dir, OUT_REPO, token=hub_server.token)
    assert "a file upload failed" in str(err.value)
    assert "HTTP 403" in str(err.value)
    assert len(hub_server.lfs_objects(OUT_REPO)) == 1
    puts = hub_server.count("lfs_put")
    result = push_folder(out_dir, OUT_REPO, token=hub_server.token)
    assert hub_server.count("lfs_put") == puts + 1
    assert result.commit_sha == hub_server.head(OUT_REPO)
    assert (
        hub_server.files(OUT_REPO)["sub/extra.safetensors"]
        == (out_dir / "sub" / "extra.safetensors").read_bytes()
    )


def test_a_transient_error_is_absorbed_by_the_client_backoff(hub_server: HubServer, out_dir: Path):
    require_lfs_uploads()
    hub_server.fail("lfs_put", status=503)
    result = push_folder(out_dir, OUT_REPO, token=hub_server.token)  # one 1 s backoff
    assert result.commit_sha == hub_server.head(OUT_REPO)


def test_read_only_token_cannot_push(hub_server: HubServer, out_dir: Path):
    hub_server.create_repo(OUT_REPO)
    with pytest.raises(InputError) as err:
        push_folder(out_dir, OUT_REPO, token=hub_server.read_token)
    assert "may not write" in str(err.value) and "write access" in str(err.value)
    assert "is intact" in str(err.value)


def test_push_without_a_token_says_how_to_log_in(hub_server: HubServer, out_dir: Path):
    with pytest.raises(InputError) as err:
        push_folder(out_dir, OUT_REPO)
    assert "did not accept the credentials" in str(err.value)
    assert "hf auth login" in str(err.value)
    assert not hub_server.has_repo(OUT_REPO)


def test_push_to_an_unreachable_hub_gives_the_retry_command(
    hub_server: HubServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(RuntimeFailure) as err:
        push_folder(out_dir, OUT_REPO, private=True, token=hub_server.token)
    assert "cannot reach the Hub" in str(err.value)
    assert f"panacea-patch push {out_dir} {OUT_REPO} --private" in str(err.value)


def test_push_refuses_offline_mode(
    hub_server: HubServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeFailure, match="HF_HUB_OFFLINE"):
        push_folder(out_dir, OUT_REPO, token=hub_server.token)
    assert hub_server.requests == []


def test_large_folder_threshold_picks_the_resumable_uploader_when_available(
    hub_server: HubServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    class WithLarge:
        def upload_large_folder(self) -> None: ...

    monkeypatch.setattr(hub_push, "LARGE_FOLDER_BYTES", 1000)
    assert hub_push._use_large_folder_upload(WithLarge(), 1000, create_pr=False)
    assert not hub_push._use_large_folder_upload(WithLarge(), 999, create_pr=False)
    assert not hub_push._use_large_folder_upload(WithLarge(), 10**6, create_pr=True)
    assert not hub_push._use_large_folder_upload(object(), 10**6, create_pr=False)
    # Above the threshold the push still completes, whichever uploader this client offers.
    require_lfs_uploads()
    result = push_folder(out_dir, OUT_REPO, token=hub_server.token)
    assert result.commit_sha == hub_server.head(OUT_REPO)


# ---------------------------------------------------------------------------- token hygiene


def test_scrub_secrets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment_42")
    real_shape = "hf_" + "A1b2C3d4E5" * 3 + "f6g7"
    text = (
        f"a {FAKE_TOKEN} b hf_fromTheEnvironment_42 c {real_shape} d Bearer xyz.abc"
        " e --token s3cr3t f --token=other g hf_hub_download"
    )
    clean = scrub_secrets(text, [FAKE_TOKEN])
    for secret in (
        FAKE_TOKEN,
        "hf_fromTheEnvironment_42",
        real_shape,
        "xyz.abc",
        "s3cr3t",
        "other",
    ):
        assert secret not in clean
    assert "hf_hub_download" in clean


def test_no_token_leaks_into_output_logs_or_errors(
    hub_server: HubServer,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    require_lfs_uploads()
    # Our and huggingface_hub's own logs at DEBUG; other libraries at INFO (httpcore's DEBUG
    # trace prints raw response headers, which here include the server's deliberate echo).
    caplog.set_level(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    for name in ("panacea_patch", "huggingface_hub"):
        caplog.set_level(logging.DEBUG, logger=name)  # restored after the test
        logging.getLogger(name).addHandler(handler)
    hub_server.add_token(FAKE_TOKEN, hub_server.user, orgs=(hub_server.org,))
    hub_server.create_repo(REPO, private=True)
    hub_server.seed_files(REPO, {"config.json": "{}"})
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    texts: list[str] = []

    def attempt(fn, *args, **kwargs) -> None:
        try:
            texts.append(repr(fn(*args, **kwargs)))
        except PanaceaError as exc:
            texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    attempt(download_snapshot, REPO)
    attempt(download_snapshot, "panacea-org/absent")
    attempt(download_snapshot, REPO, revision="nope", token=FAKE_TOKEN)
    hub_server.fail("repo_info", status=500, message=f"echo {FAKE_TOKEN}")
    attempt(download_snapshot, REPO, revision="dev")
    attempt(push_folder, out_dir, OUT_REPO, token=FAKE_TOKEN)
    hub_server.fail("commit", status=500, message=f"echo {FAKE_TOKEN}")
    (out_dir / "config.json").write_text("{}")
    attempt(push_folder, out_dir, OUT_REPO)
    hub_server.fail("lfs_put", status=403)
    (out_dir / "model.safetensors").write_bytes(b"\0changed")
    attempt(push_folder, out_dir, OUT_REPO, revision="b")
    attempt(push_folder, out_dir, "someone-else/x", token=FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    attempt(push_folder, out_dir, OUT_REPO, token=FAKE_TOKEN)
    attempt(download_snapshot, REPO, revision="dev", token=FAKE_TOKEN)

    for name in ("panacea_patch", "huggingface_hub"):
        logging.getLogger(name).removeHandler(handler)
    captured = capsys.readouterr()
    logs = stream.getvalue() + caplog.text
    assert "push to panacea-org/tiny-ft-panacea failed" in logs  # the debug logs were captured
    everything = "\n".join([*texts, captured.out, captured.err, logs])
    assert len(texts) >= 10
    assert "echo ***" in everything  # the server's echo of the token reached a message, scrubbed
    assert FAKE_TOKEN not in everything
    assert FAKE_TOKEN.removeprefix("hf_") not in everything
    # The token was really used: the server saw its user.
    assert any(r.user == hub_server.user for r in hub_server.requests)


# ---------------------------------------------------------------------------- live


@pytest.mark.hub
def test_live_hub_download_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not os.environ.get("HF_TOKEN"):
        pytest.skip("needs HF_TOKEN")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        pytest.skip("needs network access to huggingface.co")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    path, sha = download_snapshot(
        "hf-internal-testing/tiny-random-gpt2", allow_patterns=["config.json"]
    )
    assert (path / "config.json").exists() and len(sha) == 40
    with pytest.raises(InputError, match="was not found"):
        download_snapshot("panacea-patch/definitely-not-a-repo-7c1e")
    with pytest.raises(InputError, match="revision"):
        download_snapshot("hf-internal-testing/tiny-random-gpt2", revision="no-such-branch-7c1e")
