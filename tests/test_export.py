"""ONNX export: checker with full shape inference, metadata, parity with PyTorch, FP16, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mer.export.fp16 import convert_fp16  # noqa: E402
from mer.export.onnx_export import export_onnx, max_abs_diff_vs_torch  # noqa: E402
from mer.runtime.faces import FaceCropper  # noqa: E402
from mer.runtime.mfcc import mfcc  # noqa: E402
from mer.runtime.spec import DEFAULT_SPEC, LABELS, FeatureSpec  # noqa: E402
from mer.train import checkpoint as ckpt  # noqa: E402
from media import place_face  # noqa: E402


@pytest.fixture(scope="module")
def real_inputs(face, speech):
    """Real face crops (MediaPipe on frames showing a TFEID face) and real speech MFCC."""
    frames = [place_face(face, 1280, 720, k * 0.24) for k in range(15)]
    cropper = FaceCropper(DEFAULT_SPEC)
    crops = cropper(frames)
    cropper.close()
    assert crops.detected == 15
    wave = np.pad(speech[: DEFAULT_SPEC.n_samples], (0, max(0, DEFAULT_SPEC.n_samples - len(speech))))
    return crops.faces[None], mfcc(wave, DEFAULT_SPEC)[None]


def _model(fusion):
    return ckpt.bundled_or_untrained(fusion)[0]


@pytest.mark.parametrize("fusion", ["lt", "it", "ia"])
def test_onnx_is_valid_fixed_shape_and_matches_torch(exported, real_inputs, fusion, tmp_path):
    path = exported(fusion)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    shapes = {i.name: (i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in proto.graph.input}
    assert shapes == {"faces": (onnx.TensorProto.UINT8, [1, 15, 224, 224, 3]),
                      "mfcc": (onnx.TensorProto.FLOAT, [1, *DEFAULT_SPEC.mfcc_shape])}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["mer.labels"]) == list(LABELS)
    assert meta["mer.fusion"] == fusion
    assert FeatureSpec.from_json(meta["mer.feature_spec"]) == DEFAULT_SPEC
    assert meta["mer.version"] and meta["mer.trained_on"]

    faces, feats = real_inputs
    diff = max_abs_diff_vs_torch(_model(fusion), path, faces, feats)
    print(f"{fusion}: max |onnx - torch| = {diff:.2e}")
    assert diff < 1e-4

    half = convert_fp16(path, tmp_path / f"{fusion}.fp16.onnx")
    session = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("faces", "tensor(uint8)"), ("mfcc", "tensor(float)")]
    assert session.get_outputs()[0].type == "tensor(float)"
    full = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = full.run(None, {"faces": faces, "mfcc": feats})[0]
    got = session.run(None, {"faces": faces, "mfcc": feats})[0]
    dev = float(np.abs(got - ref).max())
    print(f"{fusion}: max |fp16 - fp32| = {dev:.2e} (logit range {np.ptp(ref):.2f})")
    assert dev < 0.05 * max(1.0, float(np.abs(ref).max()))


def test_calibration_travels_inside_the_graph(real_inputs, tmp_path):
    """Each modality condition the runtime feeds gets its own temperature and class bias, in ONNX
    Runtime too, and the metadata says which."""
    import torch

    model = _model("ia").eval()
    model.temperature.copy_(torch.tensor([1.5, 2.5, 3.5]))
    bias = torch.arange(24, dtype=torch.float32).reshape(3, 8) / 10 - 1.0
    model.class_bias.copy_(bias)
    path = export_onnx(model, DEFAULT_SPEC, tmp_path / "calibrated.onnx", "test")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["mer.temperature"]) == {"audiovisual": 1.5, "audio_only": 2.5, "video_only": 3.5}
    assert json.loads(meta["mer.class_bias"])["video_only"]["disgust"] == pytest.approx(float(bias[2, 6]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    faces, feats = real_inputs
    for k, (t, f, m) in enumerate(((1.5, faces, feats), (2.5, np.zeros_like(faces), feats),
                                   (3.5, faces, np.zeros_like(feats)))):
        with torch.no_grad():
            raw = model.raw_logits(torch.from_numpy(f), torch.from_numpy(m)).numpy()
        got = session.run(None, {"faces": f, "mfcc": m})[0]
        assert np.abs((got - bias[k].numpy()) * t - raw).max() < 1e-3 * max(1.0, float(np.abs(raw).max()))


def test_the_mirror_travels_inside_the_graph(real_inputs, tmp_path):
    """A model set to mirror faces (`calibrate --mirror-faces`) does it in ONNX Runtime too: the graph
    matches PyTorch, reads every other frame as its mirror image, and its metadata says so."""
    from mer.train.fusion import MerModel

    bundled = _model("ia")
    model = MerModel(**{k: v for k, v in bundled.config().items() if k != "mirror_faces"}, mirror_faces=True)
    model.load_state_dict(bundled.state_dict())
    path = export_onnx(model.eval(), DEFAULT_SPEC, tmp_path / "mirrored.onnx", "test")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["mer.model_config"])["mirror_faces"] is True
    faces, feats = real_inputs
    assert max_abs_diff_vs_torch(model, path, faces, feats) < 1e-4
    unmirrored = MerModel(**{k: v for k, v in bundled.config().items() if k != "mirror_faces"})
    unmirrored.load_state_dict(bundled.state_dict())
    plain = export_onnx(unmirrored.eval(), DEFAULT_SPEC, tmp_path / "plain.onnx", "test")
    half_flipped = faces.copy()
    half_flipped[:, 1::2] = faces[:, 1::2, :, ::-1]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"faces": faces, "mfcc": feats})[0]
    want = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(
        None, {"faces": half_flipped, "mfcc": feats})[0]
    assert np.abs(got - want).max() < 1e-3


def test_the_face_classifier_travels_inside_the_graph(real_inputs, tmp_path):
    """A model with a face-alone classifier answers a silent clip with it in ONNX Runtime too, and
    a clip with speech as PyTorch does."""
    import torch

    from mer.train.fusion import MerModel

    bundled = _model("ia")
    model = MerModel(**{k: v for k, v in bundled.config().items() if k != "face_classifier"}, face_classifier=True)
    model.load_state_dict(bundled.state_dict(), strict=False)  # the bundled model's classifier or none
    torch.manual_seed(0)
    model.face_classifier.reset_parameters()
    path = export_onnx(model.eval(), DEFAULT_SPEC, tmp_path / "face-classifier.onnx", "test")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["mer.model_config"])["face_classifier"] is True
    faces, feats = real_inputs
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for mfcc in (feats, np.zeros_like(feats)):
        with torch.no_grad():
            want = model(torch.from_numpy(faces), torch.from_numpy(mfcc)).numpy()
        assert np.abs(session.run(None, {"faces": faces, "mfcc": mfcc})[0] - want).max() < 1e-3


def test_mer_export_cli_writes_onnx_and_says_why_tensorrt_was_skipped(tmp_path, clip_factory):
    out = tmp_path / "exports"
    clip = clip_factory("check.mp4", seconds=4.0)
    proc = subprocess.run([sys.executable, "-m", "mer.export.cli", "--fusion", "ia", "--untrained", "--out", str(out),
                           "--check-clip", str(clip)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "ia.onnx").is_file() and (out / "ia.fp16.onnx").is_file()
    assert "max |onnx - torch|" in proc.stdout and "max |fp16 - fp32|" in proc.stdout
    assert f"features of {clip}" in proc.stdout
    assert "torchvision" not in proc.stderr  # the exporter's notes on operators this graph does not use
    rows = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert len({line.index(" MB ") for line in rows if " MB " in line}) == 1  # the summary's columns line up
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "skipped: tensorrt is not installed" in proc.stdout


def test_mer_export_refuses_a_checkpoint_of_another_fusion(tmp_path):
    model, spec, _ = ckpt.untrained("lt")
    ckpt.save_checkpoint(tmp_path / "lt.pt", model, spec, "test")
    proc = subprocess.run([sys.executable, "-m", "mer.export.cli", "--fusion", "ia", "--checkpoint",
                           str(tmp_path / "lt.pt"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "holds a 'lt' model" in proc.stderr and "Traceback" not in proc.stderr


def test_mer_export_refuses_a_bad_check_clip_before_writing(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    kept = tmp_path / "ia.onnx"
    kept.write_bytes(b"an earlier export")
    proc = subprocess.run([sys.executable, "-m", "mer.export.cli", "--fusion", "ia", "--untrained", "--out",
                           str(tmp_path), "--check-clip", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"mer-export: error: {bad}:") and "Traceback" not in proc.stderr
    assert kept.read_bytes() == b"an earlier export"


def test_tensorrt_engine_builds_with_sidecar(exported, tmp_path):
    from mer.export.tensorrt_engine import available, build_engine

    ok, why = available()
    if not ok:
        pytest.skip(f"TensorRT path unverified here: {why}")
    engine = build_engine(exported("ia"), tmp_path / "ia.fp16.engine", timing_cache=tmp_path / "timing.cache")
    sidecar = json.loads((tmp_path / "ia.fp16.engine.json").read_text())
    assert engine.stat().st_size > 0 and sidecar["precision"] == "fp16" and sidecar["tensorrt_version"]


def test_dilated_audio_branch_exports_and_matches_torch(real_inputs, tmp_path):
    """--audio-dilation 2 pads its dilated convolutions: the graph keeps the contract's shapes and
    ONNX Runtime computes what PyTorch does."""
    from mer.train.fusion import MerModel

    torch.manual_seed(0)
    model = MerModel("ia", face_size=112, audio_norm="level", audio_dilation=2).eval()
    path = export_onnx(model, DEFAULT_SPEC, tmp_path / "dilated.onnx", "test")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    faces, feats = real_inputs
    assert max_abs_diff_vs_torch(model, path, faces, feats) < 1e-4


def test_ensemble_shares_one_trunk_averages_its_heads_and_exports(real_inputs, tmp_path):
    """`mer-train combine`: fusion heads trained alone on one frozen trunk become one model whose
    logits are the mean of theirs, stored with the trunk once, and ONNX Runtime computes the same.
    Heads on another trunk are refused (the trunk runs once for all of them)."""
    from mer.train.fusion import MerModel, combine

    def single(seed: int) -> MerModel:
        torch.manual_seed(seed)
        return MerModel("ia", face_size=112, audio_norm="level", audio_dilation=2).eval()

    a, b, other = single(0), single(1), single(2)
    trunk = {k: v for k, v in a.visual_model.state_dict().items() if not k.startswith(("conv1d", "classifier"))}
    b.visual_model.load_state_dict(trunk, strict=False)
    ensemble = combine([a, b]).eval()
    faces, feats = (torch.from_numpy(x) for x in real_inputs)
    with torch.no_grad():
        mean = (a(faces, feats) + b(faces, feats)) / 2
        assert not torch.allclose(a(faces, feats), b(faces, feats))  # two different heads
        assert torch.allclose(ensemble(faces, feats), mean, atol=1e-5)
    with pytest.raises(ValueError, match="another face trunk"):
        combine([a, other])

    ckpt.save_checkpoint(tmp_path / "single.pt", a, DEFAULT_SPEC, "test")
    ckpt.save_checkpoint(tmp_path / "ensemble.pt", ensemble, DEFAULT_SPEC, "test")
    loaded, _, _ = ckpt.load_checkpoint(tmp_path / "ensemble.pt", "ia")
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(faces, feats), mean, atol=1e-5)
    # The trunk is most of a single model; stored once, two heads cost far less than two models.
    assert (tmp_path / "ensemble.pt").stat().st_size < 1.5 * (tmp_path / "single.pt").stat().st_size
    path = export_onnx(ensemble, DEFAULT_SPEC, tmp_path / "ensemble.onnx", "test")
    assert json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["mer.model_config"])["members"] == 2
    assert max_abs_diff_vs_torch(ensemble, path, *real_inputs) < 1e-4
