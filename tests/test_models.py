"""The fusion models: parameter counts of the paper, reference checkpoints, the I/O contract."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mer.train.efficientface import EfficientFaceTemporal, load_reference_checkpoint  # noqa: E402
from mer.train.fusion import MerModel  # noqa: E402

PAPER_COUNTS = {"ia": 1_855_000, "it": 1_938_000, "lt": 2_046_000}


@pytest.mark.parametrize("fusion", ["ia", "it", "lt"])
def test_parameter_counts_match_the_paper(fusion):
    model = MerModel(fusion, n_mfcc=10)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - PAPER_COUNTS[fusion]) / PAPER_COUNTS[fusion] < 0.01, count


def test_trunk_has_efficientface_size():
    trunk = EfficientFaceTemporal()
    count = sum(p.numel() for n, p in trunk.named_parameters() if not n.startswith(("conv1d", "classifier")))
    assert count == 1_268_118


@pytest.mark.parametrize("fusion", ["ia", "it", "lt"])
def test_forward_takes_the_onnx_contract_inputs(fusion):
    model = MerModel(fusion).eval()
    faces = torch.randint(0, 256, (2, 15, 224, 224, 3), dtype=torch.uint8)
    mfcc = torch.randn(2, 10, 157) * 30
    with torch.no_grad():
        logits = model(faces, mfcc)
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()


@pytest.mark.parametrize("fusion", ["ia", "it", "lt"])
def test_level_normalisation_makes_the_model_blind_to_recording_level(fusion):
    # A gain of g dB moves every dB mel energy by g, which the orthonormal DCT puts in c0 alone
    # (by g * sqrt(n_mels)): "level" must cancel exactly that and nothing else.
    torch.manual_seed(0)
    model = MerModel(fusion, audio_norm="level").eval()
    faces = torch.randint(0, 256, (1, 15, 224, 224, 3), dtype=torch.uint8)
    mfcc = torch.randn(1, 10, 157) * 30
    louder, timbre = mfcc.clone(), mfcc.clone()
    louder[:, 0] += 25 * 128 ** 0.5
    timbre[:, 3] += 25.0
    with torch.no_grad():
        base, loud, other = model(faces, mfcc), model(faces, louder), model(faces, timbre)
    assert torch.allclose(base, loud, atol=1e-4)
    assert (base - other).abs().max() > 1e-3  # a change in timbre still reaches the logits
    # Absent audio (all-zero MFCC) stays the input the no-audio condition was trained on.
    assert torch.equal(model.audio_model.normalise(torch.zeros(1, 10, 157)), torch.zeros(1, 10, 157))


def test_internal_face_size_downscales_inside_the_model():
    model = MerModel("ia", face_size=112).eval()
    faces = torch.randint(0, 256, (1, 15, 224, 224, 3), dtype=torch.uint8)
    prepared = model.prepare_faces(faces)
    assert prepared.shape == (15, 3, 112, 112)
    assert float(prepared.max()) <= 1.0


def test_reference_checkpoint_loads_into_trunk(tmp_path):
    """An AffectNet-style EfficientFace file: {'state_dict'}, DataParallel 'module.' keys, a 7-way fc."""
    source = EfficientFaceTemporal()
    for p in source.parameters():
        torch.nn.init.normal_(p)
    state = {f"module.{k}": v for k, v in source.state_dict().items()
             if not k.startswith(("conv1d", "classifier"))}
    state["module.fc.weight"] = torch.zeros(7, 1024)
    state["module.fc.bias"] = torch.zeros(7)
    path = tmp_path / "EfficientFace_Trained_on_AffectNet7.pth.tar"
    torch.save({"epoch": 1, "state_dict": state}, path)

    model = MerModel("ia")
    missing, unexpected = load_reference_checkpoint(model.visual_model, path)
    loaded = model.visual_model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith(("conv1d", "classifier")):
            assert torch.equal(loaded[key], value), key
    assert all(k.startswith(("conv1d", "classifier")) for k in missing)
    assert unexpected == ["fc.bias", "fc.weight"]
