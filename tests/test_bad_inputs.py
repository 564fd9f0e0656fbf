"""Bad input, tried as a new user would: every row must end in a non-zero exit and one clear
error naming the offending field, file or value -- never a traceback. In-process (typer's
CliRunner) except where the installed console script itself is the point; no row trains or
starts Ray (each fails while the input is read)."""
from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.models.dvmsr import CHECKPOINT_FORMAT, DVMSR, DVMSRConfig, save_checkpoint
from tiny import TINY_TRIAL, tiny_study_config, with_overrides, write_yaml



# ---- files a user might hand over ------------------------------------------------------------
def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def png_48bit(path: Path, rgb16: np.ndarray) -> Path:
    """A true 16-bit-per-channel RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour
    type 2, rows of big-endian uint16 samples behind filter byte 0."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _rgb(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _bench(root: Path, name: str, *hr: tuple[str, np.ndarray]) -> Path:
    """A benchmark set `root/name/HR` holding the given images (no LR folder)."""
    for fname, arr in hr:
        _png(root / name / "HR" / fname, arr)
    return root


class _RunsCode:
    """Unpickling this would create a file: the checkpoint loader must refuse it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> SimpleNamespace:
    """Every bad (and the few good) files the rows use, made once."""
    d = tmp_path_factory.mktemp("bad_inputs")
    ns = SimpleNamespace(dir=d)
    rng = np.random.default_rng(0)
    ns.rand = d / "random.bin"
    ns.rand.write_bytes(rng.bytes(4096))
    ns.afile = d / "afile"
    ns.afile.write_text("a file, not a folder\n")
    ns.empty_file = d / "empty.pth"
    ns.empty_file.write_bytes(b"")
    ns.marker = d / "PWNED"
    ns.evil = d / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(ns.marker)}, ns.evil)
    ns.wrong_keys = d / "wrong_keys.pth"
    torch.save({"foo.weight": torch.zeros(3, 3)}, ns.wrong_keys)
    # a srstudy-format checkpoint whose config says embed_dim 8 but whose weights are 12 wide
    cfg8 = DVMSRConfig(embed_dim=8, n_groups=1, blocks_per_group=1, rank=2)
    sd12 = DVMSR(DVMSRConfig(embed_dim=12, n_groups=1, blocks_per_group=1, rank=2)).state_dict()
    ns.wrong_shapes = d / "wrong_shapes.pth"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg8.to_dict(), "state_dict": sd12}, ns.wrong_shapes)
    ns.good_ckpt = save_checkpoint(DVMSR(cfg8), d / "good.pth")
    # images
    ns.corrupt_root = _bench(d / "corrupt", "S", ("ok.png", _rgb(1, 24, 24)))
    (d / "corrupt" / "S" / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    ns.empty_root = d / "emptyset"
    (ns.empty_root / "S" / "HR").mkdir(parents=True)
    ns.small_root = _bench(d / "small", "S", ("three.png", _rgb(2, 3, 3)))
    ns.float_root = d / "float"
    (ns.float_root / "S" / "HR").mkdir(parents=True)
    Image.fromarray(np.zeros((24, 24), np.float32)).save(ns.float_root / "S" / "HR" / "float.tif")
    ns.lr_root = _bench(d / "lrsize", "S", ("img.png", _rgb(3, 24, 24)))
    _png(ns.lr_root / "S" / "LR_bicubic" / "X4" / "imgx4.png", _rgb(4, 5, 7))  # must be 6x6
    ns.nolr_root = _bench(d / "nolr", "S", ("a.png", _rgb(5, 24, 24)), ("b.png", _rgb(6, 24, 24)))
    _png(ns.nolr_root / "S" / "LR_bicubic" / "X4" / "ax4.png", _rgb(7, 6, 6))  # b's LR is missing
    ns.g16_root = d / "grey16"
    (ns.g16_root / "S" / "HR").mkdir(parents=True)
    Image.fromarray((rng.integers(0, 65536, (24, 24))).astype(np.uint16)).save(ns.g16_root / "S" / "HR" / "g16.png")
    ns.rgb48_root = d / "rgb48"
    png_48bit(ns.rgb48_root / "S" / "HR" / "rgb48.png", rng.integers(0, 65536, (24, 24, 3)).astype(np.uint16))
    ns.la_root = _bench(d / "greyalpha", "S", ("la.png", rng.integers(0, 256, (24, 24, 2), dtype=np.uint8)))
    ns.empty_dir = d / "no_images"
    ns.empty_dir.mkdir()
    ns.corrupt_dir = d / "corrupt" / "S" / "HR"
    # configs
    ns.trial = lambda name, **over: write_yaml(d / f"{name}.yaml", with_overrides(TINY_TRIAL, over))
    ns.study = lambda file, **over: write_yaml(d / f"{file}.yaml", tiny_study_config(
        over.pop("workdir", d / "w_study"), **over))

    def text(name: str, content: str) -> Path:
        (d / name).write_text(content)
        return d / name

    ns.text = text
    return ns


@pytest.fixture(scope="module")
def store(f) -> str:
    """A real MLflow sqlite store holding two finished trial runs (for `srstudy pareto`)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{f.dir / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("exp", artifact_location=(f.dir / "artifacts").as_uri())
    for i, (psnr, params) in enumerate([(25.0, 1000.0), (26.0, 2000.0)]):
        rid = c.create_run(exp, run_name=f"t{i}", tags={"role": "trial"}).info.run_id
        c.log_batch(rid, metrics=[Metric("val_psnr", psnr, 0, 1), Metric("params", params, 0, 0)])
        c.set_terminated(rid, "FINISHED")
    return uri


def _cli(args) -> "object":
    return CliRunner().invoke(app, [str(a) for a in args])


def _text(res) -> str:
    """The whole output with line wrapping undone."""
    return " ".join(res.output.split())


def _assert_refused(res, names) -> str:
    text = _text(res)
    assert res.exit_code != 0, text
    # a clean exit (SystemExit from the command), not an exception escaping into typer
    assert isinstance(res.exception, SystemExit), f"{type(res.exception).__name__}: {res.exception}\n{text}"
    assert "Traceback" not in res.output
    for name in names:
        assert name in text, f"{name!r} not named in: {text}"
    return text


# ---- the table ----------------------------------------------------------------------------------
# (id, args(f, store) -> argv, names the message must contain)
def W(f) -> list:
    """A fresh workdir for trial/teacher rows."""
    return ["--workdir", f.dir / "w"]


def TRIAL(f, file: str, **over) -> list:
    return ["trial", "--config", f.trial(file, **over), *W(f)]


def STUDY(f, file: str, **over) -> list:
    return ["launch", "--config", f.study(file, **over)]


def EVAL(root, sets: str = "S") -> list:
    return ["eval", "--model", "bicubic", "--data-root", root, "--sets", sets]


def EVAL_CKPT(path) -> list:
    return ["eval", "--checkpoint", path, "--data-root", "bundled"]


def EXPORT_CKPT(f, path) -> list:
    return ["export", "--checkpoint", path, "--out", f.dir / "export_out"]


def PARETO(uri: str) -> list:
    return ["pareto", "--tracking-uri", uri, "--experiment", "exp", "--no-tag"]


ROWS = [
    # trial YAML
    ("trial-unknown-key", lambda f, s: TRIAL(f, "t_unknown", studnt={"rank": 2}), ["studnt"]),
    ("trial-unknown-nested-key", lambda f, s: TRIAL(f, "t_nested", **{"student.embed_dims": 8}), ["student.embed_dims"]),
    ("trial-wrong-type", lambda f, s: TRIAL(f, "t_type", iterations="many"), ["iterations", "many"]),
    ("trial-alpha-out-of-range", lambda f, s: TRIAL(f, "t_alpha", alpha=1.5), ["alpha", "1.5"]),
    ("trial-batch-zero", lambda f, s: TRIAL(f, "t_batch", batch_size=0), ["batch_size"]),
    ("trial-bad-device", lambda f, s: TRIAL(f, "t_dev", device="tpu"), ["device", "tpu"]),
    ("trial-bad-precision", lambda f, s: TRIAL(f, "t_prec", precision="fp8"), ["precision", "fp8"]),
    ("trial-missing-config", lambda f, s: ["trial", "--config", f.dir / "nope.yaml", *W(f)], ["nope.yaml"]),
    ("trial-unreadable-yaml", lambda f, s: ["trial", "--config", f.text("broken.yaml", "alpha: [0.5, 1\n"), *W(f)],
     ["broken.yaml", "YAML"]),
    ("trial-yaml-is-a-list", lambda f, s: ["trial", "--config", f.text("list.yaml", "- alpha\n- 0.5\n"), *W(f)],
     ["list.yaml", "list"]),
    ("trial-missing-teacher-checkpoint", lambda f, s: TRIAL(f, "t_tck", **{"teacher.checkpoint": str(f.dir / "gone.pth")}),
     ["teacher.checkpoint", "gone.pth"]),
    ("trial-missing-train-folder", lambda f, s: TRIAL(f, "t_train", **{"data.train": [str(f.dir / "nowhere")]}),
     ["data.train", "nowhere"]),
    ("trial-benchmark-sets-without-root", lambda f, s: TRIAL(f, "t_bench", **{"data.benchmark_sets": ["Set5"]}),
     ["benchmark_root"]),
    ("trial-set-without-equals", lambda f, s: ["trial", "--set", "student.rank", *W(f)], ["student.rank", "key=value"]),
    ("trial-set-wrong-type", lambda f, s: ["trial", "--set", "student.embed_dim=abc", *W(f)],
     ["student.embed_dim", "abc"]),
    ("trial-set-bad-yaml", lambda f, s: ["trial", "--set", "data.benchmark_sets=[Set5", *W(f)], ["data.benchmark_sets"]),
    ("trial-set-into-a-value", lambda f, s: ["trial", "--set", "alpha.x=1", *W(f)], ["alpha"]),
    # study YAML (refused while the config is read: before Ray or any training)
    ("study-unknown-key", lambda f, s: STUDY(f, "s_unknown", num_sample=3), ["num_sample"]),
    ("study-not-a-trial-setting", lambda f, s: STUDY(f, "s_key", search_space={
        "student.colour": {"type": "int", "low": 1, "high": 2}}), ["student.colour"]),
    ("study-low-above-high", lambda f, s: STUDY(f, "s_lowhigh", search_space={
        "student.rank": {"type": "int", "low": 3, "high": 1}}), ["student.rank", "low"]),
    ("study-categorical-no-choices", lambda f, s: STUDY(f, "s_cat", search_space={
        "student.rank": {"type": "categorical", "choices": []}}), ["student.rank", "choices"]),
    ("study-bad-objective", lambda f, s: STUDY(f, "s_obj", objectives=["psnr:up"]), ["objectives", "up"]),
    ("study-bad-constraint", lambda f, s: STUDY(f, "s_con", constraints=["params ~ 5"]), ["params ~ 5"]),
    ("study-num-samples-zero", lambda f, s: STUDY(f, "s_num", num_samples=0), ["num_samples"]),
    ("study-negative-gpu", lambda f, s: STUDY(f, "s_gpu", **{"resources.gpu": -1}), ["resources.gpu"]),
    ("study-bad-name", lambda f, s: STUDY(f, "s_name", name="my study"), ["name", "my study"]),
    ("study-yaml-is-a-list", lambda f, s: ["launch", "--config", f.text("slist.yaml", "- name\n")], ["slist.yaml"]),
    ("study-set-wrong-type", lambda f, s: [*STUDY(f, "s_ok"), "--set", "num_samples=lots"], ["num_samples", "lots"]),
    # data (scored with `srstudy eval --model bicubic`, or read by a trial before its teacher)
    ("data-corrupt-image", lambda f, s: EVAL(f.corrupt_root), ["broken.png"]),
    ("data-empty-set-folder", lambda f, s: EVAL(f.empty_root), ["no image files", "HR"]),
    ("data-too-small-image", lambda f, s: EVAL(f.small_root), ["three.png", "3x3", "scale 4"]),
    ("data-float-tiff", lambda f, s: EVAL(f.float_root), ["float.tif", "float"]),
    ("data-lr-wrong-size", lambda f, s: EVAL(f.lr_root), ["imgx4.png", "6x6"]),
    ("data-lr-file-missing", lambda f, s: EVAL(f.nolr_root), ["bx4.png"]),
    ("data-root-missing", lambda f, s: EVAL(f.dir / "no_root"), ["no_root"]),
    ("data-set-missing", lambda f, s: EVAL(f.small_root, "Set9"), ["Set9"]),
    ("data-sets-empty", lambda f, s: EVAL(f.small_root, ","), ["--sets"]),
    ("data-train-folder-empty", lambda f, s: TRIAL(f, "t_empty", **{"data.train": [str(f.empty_dir)]}), ["no_images"]),
    ("data-train-folder-corrupt-image", lambda f, s: TRIAL(f, "t_corrupt", **{"data.train": [str(f.corrupt_dir)]}),
     ["broken.png"]),
    # checkpoints
    ("ckpt-random-bytes-eval", lambda f, s: EVAL_CKPT(f.rand), ["random.bin", "cannot be read as a PyTorch checkpoint"]),
    ("ckpt-random-bytes-export", lambda f, s: EXPORT_CKPT(f, f.rand),
     ["random.bin", "cannot be read as a PyTorch checkpoint"]),
    ("ckpt-code-executing-pickle", lambda f, s: EVAL_CKPT(f.evil), ["evil.pth", "weights_only"]),
    ("ckpt-wrong-keys", lambda f, s: EVAL_CKPT(f.wrong_keys), ["wrong_keys.pth", "conv_first.weight"]),
    ("ckpt-wrong-shapes", lambda f, s: EXPORT_CKPT(f, f.wrong_shapes), ["wrong_shapes.pth", "mismatched shapes"]),
    ("ckpt-empty-file", lambda f, s: EVAL_CKPT(f.empty_file), ["empty.pth", "empty"]),
    ("ckpt-is-a-folder", lambda f, s: EVAL_CKPT(f.empty_dir), ["no_images", "folder"]),
    ("ckpt-missing", lambda f, s: EXPORT_CKPT(f, f.dir / "gone.pth"), ["gone.pth"]),
    ("ckpt-teacher-random-bytes", lambda f, s: ["teacher", "--config", f.trial(
        "t_trand", **{"teacher.checkpoint": str(f.rand)}), *W(f)], ["random.bin"]),
    # CLI arguments
    ("cli-unknown-backend", lambda f, s: [*EVAL_CKPT(f.good_ckpt), "--backend", "warp"], ["warp", "--backend"]),
    ("cli-bad-model", lambda f, s: ["eval", "--model", "bilinear", "--data-root", "bundled"], ["bilinear"]),
    ("cli-pareto-bad-direction", lambda f, s: [*PARETO(s), "--objectives", "psnr:up"], ["psnr:up"]),
    ("cli-pareto-empty-objectives", lambda f, s: [*PARETO(s), "--objectives", ","], ["objectives"]),
    ("cli-pareto-unknown-metric", lambda f, s: [*PARETO(s), "--objectives", "fooscore:min"], ["fooscore"]),
    ("cli-pareto-constraint-unknown-metric", lambda f, s: [*PARETO(s), "--objectives", "psnr:max",
                                                           "--constraint", "fooscore<=5"], ["fooscore"]),
    ("cli-pareto-bad-constraint", lambda f, s: [*PARETO(s), "--objectives", "psnr:max,params:min",
                                                "--constraint", "params <> 5"], ["params <> 5"]),
    ("cli-pareto-bad-reference", lambda f, s: [*PARETO(s), "--objectives", "psnr:max,params:min",
                                               "--reference", "a,b"], ["--reference", "a,b"]),
    ("cli-pareto-unknown-experiment", lambda f, s: ["pareto", "--tracking-uri", s, "--experiment", "nope"], ["nope"]),
    ("cli-export-no-source", lambda f, s: ["export", "--out", f.dir / "export_out"], ["--run-id", "--best", "--checkpoint"]),
    ("cli-export-bad-latency-sizes", lambda f, s: [*EXPORT_CKPT(f, f.good_ckpt), "--latency-sizes", "64,big"],
     ["--latency-sizes", "64,big"]),
    ("cli-bench-onnx-random-bytes", lambda f, s: ["bench", "--onnx", f.rand, "--on", "local"],
     ["random.bin", "not a valid ONNX model"]),
    ("cli-bench-onnx-folder", lambda f, s: ["bench", "--onnx", f.empty_dir, "--on", "local"], ["no_images", "folder"]),
    ("cli-bench-onnx-and-best", lambda f, s: ["bench", "--onnx", f.rand, "--best", "--on", "local"], ["--best"]),
    ("cli-bench-unknown-target", lambda f, s: ["bench", "--onnx", f.rand, "--on", "moon"], ["moon"]),
    # --workdir that is a file, for every command that takes one
    ("workdir-file-trial", lambda f, s: ["trial", "--workdir", f.afile], ["afile", "is a file"]),
    ("workdir-file-teacher", lambda f, s: ["teacher", "--workdir", f.afile], ["afile", "is a file"]),
    ("workdir-file-launch", lambda f, s: ["launch", "--workdir", f.afile], ["afile", "is a file"]),
    ("workdir-file-parent", lambda f, s: ["launch", "--workdir", f.afile / "sub"], ["afile", "is a file"]),
    ("workdir-file-in-study-yaml", lambda f, s: STUDY(f, "s_wd", workdir=str(f.afile)), ["afile", "is a file"]),
    ("workdir-file-pareto", lambda f, s: ["pareto", "--workdir", f.afile], ["afile", "is a file"]),
    ("workdir-file-report", lambda f, s: ["report", "--workdir", f.afile], ["afile", "is a file"]),
    ("workdir-file-export", lambda f, s: ["export", "--best", "--workdir", f.afile, "--out", f.dir / "export_out"],
     ["afile", "is a file"]),
    ("workdir-file-bench", lambda f, s: ["bench", "--best", "--workdir", f.afile, "--on", "local"],
     ["afile", "is a file"]),
]


@pytest.mark.parametrize("args, names", [pytest.param(a, n, id=i) for i, a, n in ROWS])
def test_bad_input_is_refused_naming_it(f, store, args, names):
    _assert_refused(_cli(args(f, store)), names)


def test_the_table_is_wide_enough():
    kinds = {i.split("-")[0] for i, _, _ in ROWS}
    assert len(ROWS) >= 30 and {"trial", "study", "data", "ckpt", "cli", "workdir"} <= kinds


def test_code_executing_pickle_runs_nothing(f):
    _assert_refused(_cli(EXPORT_CKPT(f, f.evil)), ["evil.pth"])
    assert not f.marker.exists()  # weights_only=True refused it before any code ran


def test_unreadable_checkpoint_is_one_line_without_torchs_retry_advice(f):
    """torch's message advises retrying with weights_only=False, which would run any code in
    the file: the error keeps only torch's reason."""
    res = _cli(EVAL_CKPT(f.rand))
    _assert_refused(res, ["random.bin", "UnpicklingError"])
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "False" not in res.output and "pytorch.org" not in res.output


def test_eval_without_checkpoint_prints_exactly_one_error(f):
    res = _cli(["eval", "--data-root", "bundled"])
    text = _assert_refused(res, ["--checkpoint"])
    assert res.output.count("error:") == 1, res.output
    assert text.startswith("error: --checkpoint is required")


@pytest.mark.parametrize("root, fname, what", [("g16_root", "g16.png", "16-bit grey"),
                                               ("rgb48_root", "rgb48.png", "16-bit RGB"),
                                               ("la_root", "la.png", "alpha")])
def test_deep_or_alpha_images_are_scored_with_a_warning_naming_them(f, caplog, root, fname, what):
    with caplog.at_level(logging.WARNING, logger="srstudy.data"):
        res = _cli([*EVAL(getattr(f, root)), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["S"]["n"] == 1
    assert fname in caplog.text and what in caplog.text


@pytest.mark.parametrize("argv, names", [
    (lambda f: ["trial", "--workdir", f.afile], ["afile", "is a file"]),
    (lambda f: ["bench", "--onnx", f.rand, "--on", "local"], ["random.bin", "not a valid ONNX model"]),
], ids=["trial-workdir-file", "bench-onnx-random-bytes"])
def test_installed_script_prints_one_line_not_a_traceback(f, argv, names):
    """The two raw tracebacks of issue 12, through the real console script."""
    env = {**os.environ, "COLUMNS": "80"}
    srstudy = Path(sys.executable).with_name("srstudy")
    cmd = [str(srstudy)] if srstudy.exists() else [sys.executable, "-m", "srstudy.cli"]
    out = subprocess.run([*cmd, *map(str, argv(f))], capture_output=True, text=True, cwd=f.dir, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in names), out.stderr


# ---- the same checks one level down, where the library is used directly ------------------------
def test_48bit_png_warns_and_keeps_the_high_byte(tmp_path, caplog):
    from srstudy.data import read_image

    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    path = png_48bit(tmp_path / "deep.png", rgb16)
    assert Image.open(path).mode == "RGB"  # Pillow reads it as 8-bit RGB: only the raw mode tells
    with caplog.at_level(logging.WARNING, logger="srstudy.data"):
        img, is_grey = read_image(path)
    assert not is_grey
    np.testing.assert_array_equal(img, (rgb16 >> 8).astype(np.uint8))
    assert "deep.png" in caplog.text and "16-bit RGB" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="srstudy.data"):
        read_image(_png(tmp_path / "plain.png", _rgb(0, 5, 7)))
    assert "16-bit" not in caplog.text  # an 8-bit RGB PNG is not flagged


def test_too_small_images_are_refused_where_they_are_paired(tmp_path):
    from srstudy.data import BenchmarkSet, min_benchmark_side

    assert min_benchmark_side(4) == 20 and min_benchmark_side(2) == 16  # 2*4+11 -> 20; 2*2+11 -> 16
    with pytest.raises(ValueError, match=r"image 'tiny' is 19x40 px .*scale 4.*20x20"):
        BenchmarkSet.from_images([("ok", _rgb(0, 20, 20)), ("tiny", _rgb(1, 19, 40))], scale=4)
    assert len(BenchmarkSet.from_images([("ok", _rgb(0, 20, 20))], scale=4)) == 1
    root = _bench(tmp_path, "S", ("a.png", _rgb(2, 24, 24)), ("z.png", _rgb(3, 40, 8)))
    with pytest.raises(ValueError, match=r"z\.png is 40x8 px"):  # when the set is opened, not mid-scoring
        BenchmarkSet(root, "S")


def test_imresize_names_the_size_it_cannot_resize():
    from srstudy.data.imresize import imresize

    with pytest.raises(ValueError, match=r"imresize: the image is 0x3 \(HxW\)"):
        imresize(np.zeros((0, 3, 3), np.uint8), 0.25)


def test_onnxruntime_refusal_names_the_graph(tmp_path):
    from srstudy.deploy.runtime import ort_session

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(ValueError, match=r"onnxruntime cannot load the ONNX graph .*bad\.onnx: InvalidProtobuf"):
        ort_session(bad)
    with pytest.raises(ValueError, match=r"ONNX graph of 11 bytes"):
        ort_session(b"not a graph")
