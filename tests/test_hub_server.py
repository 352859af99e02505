"""The local Hub test server speaks the protocol the real huggingface_hub client expects.

Every test drives the real client (no monkeypatching of its internals) against ``hub_server``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # read by huggingface_hub at import

import json
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import (
    DROP_CONNECTION,
    HubServer,
    git_blob_sha1,
    read_tree,
    require_lfs_uploads,
    wants_lfs,
    write_tiny_checkpoint,
)
from tests.hub_server import hub_server as hub_server  # the fixture, until conftest imports it

REPO = "panacea-org/tiny"


def make_api(server: HubServer, token: str | bool | None = None) -> HfApi:
    return HfApi(endpoint=server.url, token=server.token if token is None else token)


def download(server: HubServer, tmp_path: Path, revision: str | None = None, token=None) -> Path:
    path = snapshot_download(
        REPO,
        revision=revision,
        endpoint=server.url,
        token=server.token if token is None else token,
        cache_dir=tmp_path / "cache",
    )
    return Path(path)


def test_fixture_points_the_environment_at_the_server(hub_server: HubServer, tmp_path: Path):
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    assert hub_server.url.startswith("http://127.0.0.1:")
    assert Path(os.environ["HF_HOME"]).is_relative_to(tmp_path)
    assert "HF_TOKEN" not in os.environ


def test_create_repo_starts_with_gitattributes_and_honours_exist_ok(hub_server: HubServer):
    api = make_api(hub_server)
    url = api.create_repo(REPO, private=True)
    assert url.repo_id == REPO and str(url) == f"{hub_server.url}/{REPO}"
    assert hub_server.repo(REPO).private
    assert set(hub_server.files(REPO)) == {".gitattributes"}
    assert b"*.safetensors filter=lfs" in hub_server.files(REPO)[".gitattributes"]
    assert str(api.create_repo(REPO, exist_ok=True)) == str(url)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("someone-else/tiny")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        make_api(hub_server, token=False).create_repo("panacea-org/anon")
    assert err.value.response.status_code == 401


def test_upload_folder_stores_weights_in_lfs_and_downloads_back(
    hub_server: HubServer, tmp_path: Path
):
    require_lfs_uploads()
    local = write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    info = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt", commit_message="up")
    assert info.oid == hub_server.head(REPO)
    assert info.commit_url == f"{hub_server.url}/{REPO}/commit/{info.oid}"
    assert hub_server.count("lfs_put") == 2

    tree = {f.path: f for f in api.list_repo_tree(REPO, recursive=True) if hasattr(f, "lfs")}
    assert tree["model.safetensors"].lfs is not None
    assert tree["sub/extra.safetensors"].lfs is not None
    assert tree["config.json"].lfs is None
    assert tree["config.json"].blob_id == git_blob_sha1(local["config.json"])

    snapshot = download(hub_server, tmp_path)
    assert snapshot.name == info.oid
    got = read_tree(snapshot)
    assert {k: v for k, v in got.items() if k != ".gitattributes"} == local

    meta = get_hf_file_metadata(
        hf_hub_url(REPO, "model.safetensors", endpoint=hub_server.url), token=hub_server.token
    )
    assert meta.commit_hash == info.oid
    assert meta.size == len(local["model.safetensors"])
    assert meta.etag == tree["model.safetensors"].lfs.sha256


def test_unchanged_upload_sends_nothing_and_makes_no_commit(hub_server: HubServer, tmp_path: Path):
    require_lfs_uploads()
    write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    first = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    puts = hub_server.count("lfs_put")
    again = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    assert again.oid == first.oid == hub_server.head(REPO)
    assert hub_server.count("lfs_put") == puts
    assert hub_server.count("commit") == 1


def test_revisions_resolve_by_branch_tag_and_sha(hub_server: HubServer, tmp_path: Path):
    hub_server.create_repo(REPO)
    old = hub_server.seed_files(REPO, {"config.json": '{"v": 1}'})
    hub_server.create_tag(REPO, "v1")
    new = hub_server.seed_files(REPO, {"config.json": '{"v": 2}'})
    dev = hub_server.seed_files(REPO, {"config.json": '{"v": 3}'}, branch="dev")
    api = make_api(hub_server)
    assert api.model_info(REPO).sha == new
    assert api.model_info(REPO, revision="dev").sha == dev
    refs = api.list_repo_refs(REPO)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [t.target_commit for t in refs.tags] == [old]
    for revision, sha, value in (("dev", dev, 3), ("v1", old, 1), (old, old, 1), (None, new, 2)):
        snapshot = download(hub_server, tmp_path, revision=revision)
        assert snapshot.name == sha
        assert json.loads((snapshot / "config.json").read_text()) == {"v": value}


def test_upload_to_a_new_branch_leaves_main_alone(hub_server: HubServer, tmp_path: Path):
    require_lfs_uploads()
    write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    main = hub_server.head(REPO)
    api.create_branch(REPO, branch="patched")
    api.create_branch(REPO, branch="patched", exist_ok=True)
    info = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt", revision="patched")
    assert hub_server.head(REPO, "patched") == info.oid
    assert hub_server.head(REPO) == main


def test_create_pr_commits_to_a_pr_ref(hub_server: HubServer, tmp_path: Path):
    require_lfs_uploads()
    write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    main = hub_server.head(REPO)
    info = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt", create_pr=True)
    assert info.pr_url == f"{hub_server.url}/{REPO}/discussions/1"
    assert info.pr_revision == "refs/pr/1"
    assert hub_server.head(REPO) == main
    snapshot = download(hub_server, tmp_path, revision="refs/pr/1")
    assert (snapshot / "model.safetensors").exists()


def test_private_repo_is_invisible_without_the_right_token(hub_server: HubServer, tmp_path: Path):
    hub_server.create_repo(REPO, private=True)
    hub_server.seed_files(REPO, {"config.json": "{}"})
    with pytest.raises(RepositoryNotFoundError) as err:
        make_api(hub_server, token=False).model_info(REPO)
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as err:
        make_api(hub_server, token=hub_server.outsider_token).model_info(REPO)
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        download(hub_server, tmp_path, token=False)
    assert make_api(hub_server, token=hub_server.read_token).model_info(REPO).private is True
    assert (download(hub_server, tmp_path, token=hub_server.read_token) / "config.json").exists()


def test_unknown_token_is_rejected_before_anything_else(hub_server: HubServer):
    hub_server.create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        make_api(hub_server, token="hf_notARealToken").model_info(REPO)
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)
    assert "Invalid credentials" in str(err.value)


def test_gated_repo_lists_but_refuses_files_until_access_is_granted(
    hub_server: HubServer, tmp_path: Path
):
    hub_server.create_repo(REPO, gated="manual")
    hub_server.seed_files(REPO, {"config.json": "{}"})
    assert make_api(hub_server, token=False).model_info(REPO).gated == "manual"
    kwargs = dict(filename="config.json", endpoint=hub_server.url, cache_dir=tmp_path / "c")
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(REPO, token=False, **kwargs)
    assert err.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(REPO, token=hub_server.outsider_token, **kwargs)
    assert err.value.response.status_code == 403
    assert "ask for access" in str(err.value)
    hub_server.grant_access(REPO, "outsider")
    assert Path(hf_hub_download(REPO, token=hub_server.outsider_token, **kwargs)).exists()


def test_missing_revision_and_missing_file(hub_server: HubServer, tmp_path: Path):
    hub_server.create_repo(REPO)
    api = make_api(hub_server)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        download(hub_server, tmp_path, revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            REPO, "nope.json", endpoint=hub_server.url, token=False, cache_dir=tmp_path / "c"
        )
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("panacea-org/absent")


def test_failed_commit_keeps_uploaded_objects_so_a_retry_sends_none(
    hub_server: HubServer, tmp_path: Path
):
    require_lfs_uploads()
    write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    before = hub_server.head(REPO)
    hub_server.fail("commit", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    assert err.value.response.status_code == 500
    assert hub_server.head(REPO) == before
    assert len(hub_server.lfs_objects(REPO)) == 2
    puts = hub_server.count("lfs_put")
    info = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    assert hub_server.count("lfs_put") == puts
    assert hub_server.head(REPO) == info.oid != before


def test_a_transient_put_failure_is_retried_by_the_client(hub_server: HubServer, tmp_path: Path):
    require_lfs_uploads()
    local = write_tiny_checkpoint(tmp_path / "ckpt")
    api = make_api(hub_server)
    api.create_repo(REPO)
    rule = hub_server.fail("lfs_put", status=503, times=1)
    api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")  # the client backs off 1 s
    assert rule.fired == 1
    assert hub_server.count("lfs_put") == 3
    assert hub_server.files(REPO)["model.safetensors"] == local["model.safetensors"]


def test_failure_knob_skip_times_and_dropped_connections(hub_server: HubServer):
    hub_server.create_repo(REPO)
    api = make_api(hub_server)
    hub_server.fail("repo_info", status=502, skip=1, times=1)
    api.model_info(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info(REPO)
    assert err.value.response.status_code == 502
    api.model_info(REPO)
    hub_server.fail("repo_info", status=DROP_CONNECTION)
    with pytest.raises(httpx2.TransportError):
        api.model_info(REPO)
    api.model_info(REPO)
    hub_server.fail("*", status=500, times=None)
    with pytest.raises(HfHubHTTPError):
        api.model_info(REPO)
    hub_server.clear_failures()
    assert api.model_info(REPO).sha == hub_server.head(REPO)


def test_invalid_readme_metadata_is_refused_before_upload(hub_server: HubServer, tmp_path: Path):
    write_tiny_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "README.md").write_text("---\nlicense: [unclosed\n---\nbody\n")
    api = make_api(hub_server)
    api.create_repo(REPO)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    assert hub_server.count("lfs_put") == 0


def test_raw_protocol_checks_content_and_serves_ranges(hub_server: HubServer):
    hub_server.create_repo(REPO)
    hub_server.seed_files(REPO, {"data.bin": bytes(range(256)) * 4})
    request = urllib.request.Request(f"{hub_server.url}/lfs-storage/{'0' * 64}", b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400
    url = f"{hub_server.url}/{REPO}/resolve/main/data.bin"
    ranged = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(ranged, timeout=10) as response:
        assert response.status == 206
        assert response.read() == (bytes(range(256)) * 4)[10:20]
        assert response.headers["X-Repo-Commit"] == hub_server.head(REPO)
        assert response.headers["X-Linked-Size"] == "1024"


def test_request_log_records_the_user_not_the_token(hub_server: HubServer):
    hub_server.create_repo(REPO)
    make_api(hub_server).model_info(REPO)
    make_api(hub_server, token=False).model_info(REPO)
    users = [r.user for r in hub_server.requests if r.route == "repo_info"]
    assert users == [hub_server.user, None]
    assert hub_server.token not in repr(hub_server.requests)


@pytest.mark.parametrize(
    ("path", "sample", "expected"),
    [
        ("model.safetensors", b"{}", True),
        ("nested/adapter_model.safetensors", b"{}", True),
        ("config.json", b'{"a": 1}', False),
        ("chart.png", b"\x89PNG\r\n\x1a\n\0\0", True),
        ("notes.txt", "ε déjà".encode(), False),
    ],
)
def test_lfs_decision_follows_the_hub(path: str, sample: bytes, expected: bool):
    assert wants_lfs(path, len(sample), sample) is expected
