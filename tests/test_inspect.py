"""``panacea-patch inspect``: the layer-wise safety report (issue 3, item 7)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from panacea_patch.cli.inspect_cmd import inspect_cmd
from safetensors.torch import load_file, save_file

from panacea_patch import patch
from panacea_patch.errors import InputError
from panacea_patch.inspect import format_report, inspect_patch, plot_report
from panacea_patch.provenance import PROVENANCE_FILE, read_provenance
from tests.helpers import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Q1 = "model.layers.1.self_attn.q_proj.weight"
Q0 = "model.layers.0.self_attn.q_proj.weight"
DOWN1 = "model.layers.1.mlp.down_proj.weight"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patched_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inspect")


def _random_patch(src: Path, root: Path, name: str) -> Path:
    out = root / name
    if not out.exists():
        patch(src, out, method="random", rho=0.5, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def patched_llama(llama_dir: Path, patched_root: Path) -> Path:
    return _random_patch(llama_dir, patched_root, "llama-random")


def _hand_patch(src: Path, out: Path, deltas: dict[str, float], seed: int = 0) -> dict[str, float]:
    """Copy ``src`` and add to each named tensor a random ε of the given norm; returns ‖ε‖ stored.

    Written with the safetensors library rather than our writer, so the report is checked against
    an independent construction.
    """
    shutil.copytree(src, out)
    file = out / "model.safetensors"
    tensors = load_file(file)
    gen = torch.Generator().manual_seed(seed)
    realized = {}
    for name, norm in deltas.items():
        w0 = tensors[name]
        z = torch.randn(w0.shape, generator=gen)
        tensors[name] = w0 + z * (norm / z.norm())
        realized[name] = (tensors[name].double() - w0.double()).norm().item()
    save_file(tensors, file, metadata={"format": "pt"})
    return realized


@pytest.fixture(scope="module")
def layer1_q_only(llama_dir: Path, patched_root: Path) -> tuple[Path, dict[str, float]]:
    out = patched_root / "layer1-q"
    return out, _hand_patch(llama_dir, out, {Q1: 0.3})


@pytest.fixture(scope="module")
def two_layers(llama_dir: Path, patched_root: Path) -> tuple[Path, dict[str, float]]:
    """ε of norm 3 on layer 0's q_proj and 4 on layer 1's down_proj (total 5), with grad shares."""
    out = patched_root / "two-layers"
    realized = _hand_patch(llama_dir, out, {Q0: 3.0, DOWN1: 4.0})
    record = {
        "method": "hand",
        "rho": 5.0,
        "realized_norm": 5.0,
        "layers": [
            {"name": Q0, "grad_share": 0.25},
            {"name": DOWN1, "grad_share": 0.75},
        ],
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(record))
    return out, realized


def _invoke(*args: str | Path) -> object:
    return CliRunner().invoke(inspect_cmd, [str(a) for a in args], catch_exceptions=False)


# --- the report from real patches ----------------------------------------------------------------


def test_random_patch_report_matches_the_patch(llama_dir: Path, patched_llama: Path) -> None:
    report = inspect_patch(patched_llama, llama_dir)
    recorded = read_provenance(patched_llama)
    assert recorded is not None
    assert report.realized_norm == pytest.approx(recorded["realized_norm"], rel=1e-5)
    assert {t.name for t in report.tensors} == {e["name"] for e in recorded["layers"]}
    by_name = {e["name"]: e for e in recorded["layers"]}
    for t in report.tensors:
        assert t.norm_eps == pytest.approx(by_name[t.name]["norm_eps"], rel=1e-5)
        assert t.norm_w == pytest.approx(by_name[t.name]["norm_w"], rel=1e-5)
        assert t.rel == pytest.approx(t.norm_eps / t.norm_w)
    assert report.num_untouched == report.num_tensors - report.num_changed > 0
    assert sum(t.share for t in report.tensors) == pytest.approx(1.0)
    assert not report.has_grad_share  # the random method records no gradient
    assert report.provenance is not None and report.provenance["method"] == "random"
    assert report.notes == []


def test_layers_and_modules_aggregate_the_tensors(llama_dir: Path, patched_llama: Path) -> None:
    report = inspect_patch(patched_llama, llama_dir)
    assert [layer.name for layer in report.layers] == ["0", "1"]
    assert [layer.layer for layer in report.layers] == [0, 1]
    assert report.module_names() == ["q", "k", "v", "o", "mlp"]
    for layer in report.layers:
        members = [t for t in report.tensors if t.layer == layer.layer]
        assert layer.num_tensors == len(members) == 7
        assert layer.norm_eps == pytest.approx(math.sqrt(sum(t.norm_eps**2 for t in members)))
        assert layer.norm_w == pytest.approx(math.sqrt(sum(t.norm_w**2 for t in members)))
        assert layer.rel == pytest.approx(layer.norm_eps / layer.norm_w)
        assert layer.share == pytest.approx(sum(t.share for t in members))
        assert sum(m.norm_eps**2 for m in layer.modules.values()) == pytest.approx(
            layer.norm_eps**2
        )
        assert layer.modules["mlp"].num_tensors == 3
    assert sum(layer.share for layer in report.layers) == pytest.approx(1.0)
    assert sum(m.share for m in report.modules) == pytest.approx(1.0)
    assert math.sqrt(sum(m.norm_eps**2 for m in report.modules)) == pytest.approx(
        report.realized_norm
    )


@pytest.mark.parametrize(
    ("fixture", "modules"),
    [
        ("llama_sharded_bf16_dir", {"q", "k", "v", "o", "mlp"}),
        ("qwen2_dir", {"q", "k", "v", "o", "mlp"}),
        ("neox_dir", {"qkv", "o", "mlp"}),
        ("lora_dir", {"q", "k", "v"}),
    ],
)
def test_other_fixtures(
    fixture: str, modules: set[str], request: pytest.FixtureRequest, patched_root: Path
) -> None:
    src: Path = request.getfixturevalue(fixture)
    out = _random_patch(src, patched_root, f"{fixture}-random")
    report = inspect_patch(out, src)
    recorded = read_provenance(out)
    assert recorded is not None
    assert report.realized_norm == pytest.approx(recorded["realized_norm"], rel=1e-5)
    assert set(report.module_names()) == modules
    assert [layer.layer for layer in report.layers] == [0, 1]
    # Only what actually changed after rounding counts (a bf16 ε can vanish in a tensor).
    landed = {e["name"] for e in recorded["layers"] if e["norm_eps"] > 0}
    assert {t.name for t in report.tensors} == landed
    if fixture == "lora_dir":
        assert report.kind == "adapter"
        assert all(".lora_A." in t.name or ".lora_B." in t.name for t in report.tensors)
    json.dumps(report.to_dict(), allow_nan=False)


# --- hand-made patches: exact aggregation --------------------------------------------------------


def test_only_layer1_q_changed(llama_dir: Path, layer1_q_only: tuple[Path, dict]) -> None:
    out, realized = layer1_q_only
    report = inspect_patch(out, llama_dir)
    assert [t.name for t in report.tensors] == [Q1]
    assert report.realized_norm == pytest.approx(realized[Q1], rel=1e-5)
    [layer] = report.layers
    assert (layer.name, layer.layer, layer.share) == ("1", 1, pytest.approx(1.0))
    assert list(layer.modules) == ["q"]
    assert report.module_names() == ["q"]
    assert report.num_untouched == report.num_tensors - 1
    assert report.provenance is None and not report.has_grad_share
    text = format_report(report)
    row = next(line for line in text.splitlines() if line.startswith("1 "))
    assert "100.00%" in row


def test_two_layers_exact_shares_and_grad_share(
    llama_dir: Path, two_layers: tuple[Path, dict]
) -> None:
    out, realized = two_layers
    report = inspect_patch(out, llama_dir)
    assert report.realized_norm == pytest.approx(5.0, rel=1e-5)
    l0, l1 = report.layers
    assert (l0.name, l1.name) == ("0", "1")
    assert l0.norm_eps == pytest.approx(realized[Q0], rel=1e-5)
    assert l0.share == pytest.approx(9 / 25, rel=1e-4)
    assert l1.share == pytest.approx(16 / 25, rel=1e-4)
    assert (l0.grad_share, l1.grad_share) == (0.25, 0.75)
    assert list(l0.modules) == ["q"] and list(l1.modules) == ["mlp"]
    assert {m.name: m.share for m in report.modules} == {
        "q": pytest.approx(0.36, rel=1e-4),
        "mlp": pytest.approx(0.64, rel=1e-4),
    }
    assert report.has_grad_share and report.total.grad_share == pytest.approx(1.0)
    assert report.notes == []
    header = format_report(report).splitlines()
    assert any("grad share" in line and line.startswith("layer") for line in header)


def test_tensors_outside_blocks_get_their_own_row(llama_dir: Path, patched_root: Path) -> None:
    out = patched_root / "embed-and-q0"
    targets = r"embed_tokens|layers\.0\.self_attn\.q_proj"
    patch(llama_dir, out, method="random", rho=0.5, seed=1, targets=targets, progress=False)
    report = inspect_patch(out, llama_dir)
    assert [(row.name, row.layer) for row in report.layers] == [("0", 0), ("other", None)]
    assert report.layers[1].modules.keys() == {"embed_tokens"}
    assert sum(row.share for row in report.layers) == pytest.approx(1.0)
    assert "\nother " in format_report(report)


def test_recorded_norm_disagreeing_is_noted(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    _hand_patch(llama_dir, out, {Q0: 1.0})
    (out / PROVENANCE_FILE).write_text(json.dumps({"realized_norm": 2.0, "layers": []}))
    report = inspect_patch(out, llama_dir)
    assert len(report.notes) == 1 and "may not be the source" in report.notes[0]
    assert "note: " in format_report(report)


def test_identical_checkpoints_report_nothing_changed(llama_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(llama_dir, copy)
    report = inspect_patch(copy, llama_dir)
    assert report.num_changed == 0 and report.realized_norm == 0.0
    assert report.num_untouched == report.num_tensors
    assert "No tensor differs" in format_report(report)
    with pytest.raises(InputError, match="nothing to plot"):
        plot_report(report, tmp_path / "x.png")


def test_streams_one_tensor_pair_at_a_time(tmp_path: Path) -> None:
    """Python-level allocations stay near one tensor pair, far below the two checkpoints.

    The fixtures are too small for this (fixed overheads dominate), so it uses a synthetic
    16-tensor checkpoint of 256 KiB tensors: 4 MiB per side, 0.5 MiB per pair.
    """
    gen = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.self_attn.{m}.weight" for i in range(4) for m in "qkvo"]
    ref = {n: torch.randn(256, 256, generator=gen) for n in names}
    new = {n: t + 0.01 * torch.randn(t.shape, generator=gen) for n, t in ref.items()}
    for d, tensors in (("ref", ref), ("new", new)):
        (tmp_path / d).mkdir()
        save_file(tensors, tmp_path / d / "model.safetensors", metadata={"format": "pt"})
    del ref, new
    inspect_patch(tmp_path / "new", tmp_path / "ref")  # first-call imports are not our data
    tracemalloc.start()
    try:
        report = inspect_patch(tmp_path / "new", tmp_path / "ref")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.num_changed == 16
    pair = 2 * 256 * 256 * 4
    # Holding two pairs at once (the previous one not yet freed) would already exceed this.
    assert peak < 1.5 * pair, f"peak {peak} bytes for tensor pairs of {pair} bytes"


# --- CLI -----------------------------------------------------------------------------------------


def _table_rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Per layer")) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_json_and_table_agree(llama_dir: Path, patched_llama: Path) -> None:
    as_json = _invoke(patched_llama, "--reference", llama_dir, "--json")
    table = _invoke(patched_llama, "--reference", llama_dir, "--top", "3")
    assert as_json.exit_code == 0 and table.exit_code == 0
    data = json.loads(as_json.output)
    assert set(data) >= {"tensors", "layers", "modules", "total"}
    assert data["plot"] is None
    rows = _table_rows(table.output)
    assert list(rows) == [layer["name"] for layer in data["layers"]] + ["total"]
    for layer in data["layers"]:
        cells = rows[layer["name"]]
        assert float(cells[1]) == pytest.approx(layer["norm_eps"], rel=1e-3)
        assert float(cells[2]) == pytest.approx(layer["rel"], rel=1e-3)
        assert float(cells[3].rstrip("%")) == pytest.approx(100 * layer["share"], abs=0.006)
        for module, cell in zip(data["modules"], cells[4:], strict=True):
            expected = layer["modules"][module["name"]]["norm_eps"]
            assert float(cell) == pytest.approx(expected, rel=1e-3)
    total = data["total"]
    assert f"realized |w'-w| = {total['realized_norm']:.6g}" in table.output
    assert f"changed tensors: {total['num_changed']} " in table.output
    assert f"untouched: {total['num_untouched']};" in table.output
    assert len(data["tensors"]) == total["num_changed"] == 14
    assert table.output.count("model.layers.") == 3  # --top 3


def test_plot_writes_a_png(llama_dir: Path, patched_llama: Path, tmp_path: Path) -> None:
    png = tmp_path / "layers.png"
    result = _invoke(patched_llama, "--reference", llama_dir, "--plot", png)
    assert result.exit_code == 0, result.output
    assert f"plot: {png}" in result.output
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    width, height = _png_size(data)
    assert width >= 800 and height >= 600


def test_plot_adds_a_grad_share_panel(
    llama_dir: Path, two_layers: tuple[Path, dict], tmp_path: Path
) -> None:
    report = inspect_patch(two_layers[0], llama_dir)
    with_grad = plot_report(report, tmp_path / "grad.png")
    for t in report.tensors:
        t.grad_share = None
    without = plot_report(report, tmp_path / "plain.png")
    assert _png_size(with_grad.read_bytes())[1] > _png_size(without.read_bytes())[1]


def _png_size(data: bytes) -> tuple[int, int]:
    # IHDR is always the first chunk: width and height are its first two big-endian u32s.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_without_matplotlib_tells_how_to_install(
    llama_dir: Path, patched_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    result = _invoke(patched_llama, "--reference", llama_dir, "--plot", tmp_path / "x.png")
    assert result.exit_code == 2
    assert "pip install 'panacea-patch[plots]'" in result.output
    assert not (tmp_path / "x.png").exists()


def test_plot_into_missing_directory_is_an_input_error(
    llama_dir: Path, patched_llama: Path, tmp_path: Path
) -> None:
    result = _invoke(patched_llama, "-r", llama_dir, "--plot", tmp_path / "no" / "x.png")
    assert result.exit_code == 2 and "does not exist" in result.output


# --- mismatched checkpoints ----------------------------------------------------------------------


def test_other_model_is_not_a_patch(patched_llama: Path, qwen2_dir: Path) -> None:
    result = _invoke(patched_llama, "--reference", qwen2_dir)
    assert result.exit_code == 2
    assert "not a patch of this reference" in result.output
    assert "Fix:" in result.output


def test_shape_mismatch_is_not_a_patch(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "reshaped"
    shutil.copytree(llama_dir, out)
    tensors = load_file(out / "model.safetensors")
    name = "model.layers.0.mlp.gate_proj.weight"
    tensors[name] = tensors[name].t().contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="differ in shape") as info:
        inspect_patch(out, llama_dir)
    assert "not a patch of this reference" in str(info.value) and name in str(info.value)


def test_adapter_against_full_model_is_not_a_patch(
    lora_dir: Path, llama_dir: Path, patched_root: Path
) -> None:
    out = _random_patch(lora_dir, patched_root, "lora_dir-random")
    result = _invoke(out, "--reference", llama_dir, "--json")
    assert result.exit_code == 2
    err = json.loads(result.stdout)
    assert err["exit_code"] == 2 and "PATCHED is a LoRA adapter" in err["error"]


def test_same_checkpoint_twice_is_refused(llama_dir: Path) -> None:
    result = _invoke(llama_dir, "--reference", llama_dir)
    assert result.exit_code == 2 and "same checkpoint" in result.output


def test_missing_reference_is_an_input_error(patched_llama: Path, tmp_path: Path) -> None:
    result = _invoke(patched_llama, "--reference", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_reference_is_required(patched_llama: Path) -> None:
    result = CliRunner().invoke(inspect_cmd, [str(patched_llama)])
    assert result.exit_code == 2 and "--reference" in result.output


def test_registered_in_the_real_cli(llama_dir: Path, layer1_q_only: tuple[Path, dict]) -> None:
    proc = run_cli("inspect", str(layer1_q_only[0]), "--reference", str(llama_dir))
    assert proc.returncode == 0, proc.stderr
    assert "changed tensors: 1 " in proc.stdout
