"""Training side: RAVDESS indexing and folds, the speech cache, and the paper recipe end to end
on a tiny RAVDESS-shaped tree of real faces and real speech (one epoch, then a resume)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import SPEECH, needs_shared, read_face  # noqa: E402
from mer.train.ravdess import AT_HAND, PAPER, RavdessError, index_ravdess  # noqa: E402


@pytest.mark.parametrize("folds", [AT_HAND, PAPER], ids=["actors03-24", "paper"])
def test_folds_are_actor_disjoint_and_named_by_actor(folds):
    tests = [a for f in folds for a in f.test]
    assert len(tests) == len(set(tests))
    for fold in folds:
        assert not set(fold.test) & set(fold.val) and not set(fold.train) & (set(fold.test) | set(fold.val))
        assert fold.name == f"test{fold.test[0]:02d}-{fold.test[-1]:02d}"
    if folds is AT_HAND:
        assert set(tests) == set(range(3, 25))
        assert not {1, 2} & {a for f in folds for a in f.train + f.val + f.test}


def test_malformed_tree_gives_a_clear_error(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "hello.wav").write_bytes(b"RIFF")
    with pytest.raises(RavdessError, match="no RAVDESS media files found.*hello.wav"):
        index_ravdess(tmp_path)
    with pytest.raises(RavdessError, match="not a directory"):
        index_ravdess(tmp_path / "nope")


@needs_shared
def test_real_tree_index_and_speech_cache_match_the_runtime(tmp_path):
    from mer.runtime.decode import decode_clip
    from mer.runtime.spec import DEFAULT_SPEC
    from mer.train.audio_cache import build_speech_cache, runtime_window

    takes = [t for t in index_ravdess(SPEECH) if t.actor == 3][:4]
    assert len(index_ravdess(SPEECH)) == 1320
    assert all(t.audio is not None and t.video is None for t in takes)
    cache = build_speech_cache(takes, DEFAULT_SPEC, tmp_path)
    for i, take in enumerate(takes):
        served = decode_clip(take.audio, DEFAULT_SPEC).audio
        assert np.abs(runtime_window(cache, i, DEFAULT_SPEC) - served).max() < 1e-6
    # Speed perturbation at factor 1 is the runtime window; at 1.1 the same centre, 10 % faster.
    from mer.train.audio_cache import _window_at_speed

    assert np.abs(_window_at_speed(cache, 0, DEFAULT_SPEC, 0.0, 1.0) - runtime_window(cache, 0, DEFAULT_SPEC)).max() < 1e-6
    fast = _window_at_speed(cache, 0, DEFAULT_SPEC, 0.0, 1.1)
    mid = DEFAULT_SPEC.n_samples // 2
    assert np.allclose(fast[mid + 100], np.interp(mid + 110, np.arange(DEFAULT_SPEC.n_samples), runtime_window(
        cache, 0, DEFAULT_SPEC)), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_ravdess(tmp_path_factory):
    """Actors 03-05 x {happy, sad}: an AV take (real face + real speech) and its audio twin.

    From RAVDESS speech and two TFEID faces in ../shared; without it, from tests/fixtures (the one
    utterance for every take, the one face and its mirror image for the two emotions): enough for
    the recipe to index, train, resume and report, not to learn anything."""
    from conftest import FIXTURE_SPEECH, read_speech
    from media import place_face, write_clip

    root = tmp_path_factory.mktemp("ravdess")
    if SPEECH.is_dir():
        faces = {"03": read_face("0111b01.jpg"), "04": read_face("0111c03.jpg")}
    else:
        face = read_face()
        faces = {"03": face, "04": np.ascontiguousarray(face[:, ::-1])}
    for actor in ("03", "04", "05"):
        folder = root / f"Actor_{actor}"
        folder.mkdir()
        for emo in ("03", "04"):
            name = f"01-{emo}-01-01-01-{actor}"
            if SPEECH.is_dir():
                wave, rate = read_speech(f"03-{name}.flac")
                source = SPEECH / f"Actor_{actor}" / f"03-{name}.flac"
            else:
                wave, rate = read_speech()
                source = FIXTURE_SPEECH
            frames = [place_face(faces[emo], 320, 240, i / 15) for i in range(int(len(wave) / rate * 15))]
            write_clip(folder / f"01-{name}.mp4", frames, 15.0, wave, rate)
            shutil.copy(source, folder / f"03-{name}.flac")
    return root


def test_av_takes_pair_with_their_audio_twins(tiny_ravdess):
    takes = index_ravdess(tiny_ravdess)
    assert len(takes) == 6
    for t in takes:
        assert t.video.name[3:].split(".")[0] == t.audio.name[3:].split(".")[0]


def test_paper_recipe_trains_resumes_and_reports(tiny_ravdess, tmp_path):
    args = [sys.executable, "-m", "mer.train.cli", "paper", "--data", str(tiny_ravdess), "--test-actors", "3",
            "--val-actors", "4", "--face-size", "32", "--batch", "2", "--out", str(tmp_path)]
    first = subprocess.run(args + ["--epochs", "1"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    fold = tmp_path / "ia" / "test3"
    rows = (fold / "epochs.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,loss,val_accuracy,val_uar,val_confusion") and len(rows) == 2
    second = subprocess.run(args + ["--epochs", "2"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed after epoch 0" in second.stdout
    result = json.loads((fold / "result.json").read_text())
    assert result["test_actors"] == [3] and result["test"]["n"] == 2
    assert len((fold / "epochs.csv").read_text().splitlines()) == 3


def test_paper_recipe_on_audio_only_tree_says_what_is_missing(tmp_path):
    from conftest import speech_path

    tree = tmp_path / "audio_only" / "Actor_03"
    tree.mkdir(parents=True)
    shutil.copy(speech_path(), tree / "03-01-03-02-01-01-03.flac")  # a RAVDESS name, whatever the source
    proc = subprocess.run([sys.executable, "-m", "mer.train.cli", "paper", "--data", str(tree.parent),
                           "--test-actors", "3", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "needs RAVDESS video" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_fusion_trains_its_audio_branch_at_its_own_rate(scale):
    """--audio-lr: 0 leaves a pretrained audio branch exactly as it was (weights and batch-norm
    statistics) while the rest of the fusion learns; 0.1 gives it a tenth of the learning rate."""
    import torch

    from mer.train.train_fusion import FusionRecipe, param_groups
    from mer.train.fusion import MerModel

    torch.manual_seed(0)
    model = MerModel("ia", face_size=112)
    recipe = FusionRecipe(audio_lr_scale=scale)
    opt = torch.optim.AdamW(param_groups(model, recipe))
    assert [g["lr"] for g in opt.param_groups] == ([recipe.lr] if scale == 0 else [recipe.lr, recipe.lr * scale])
    before = {k: v.clone() for k, v in model.audio_model.state_dict().items()}
    head = model.classifier_1[0].weight.clone()
    model.train()
    if scale == 0:
        model.audio_model.eval()
    feats = torch.randn(2 * 15, 1024)
    loss = torch.nn.functional.cross_entropy(model.forward_features(feats, torch.randn(2, 10, 157)), torch.tensor([0, 3]))
    loss.backward()
    opt.step()
    after = model.audio_model.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged == (scale == 0)
    assert not torch.equal(head, model.classifier_1[0].weight)


def test_weight_averaging_means_the_weights_and_measures_batch_norm_again():
    """train_speech's --average-last: the mean of the kept states, then batch-norm statistics
    measured on the given batches (the averaged weights' own), not carried over from any epoch."""
    import torch

    from mer.train.audio_cnn import AudioCNN
    from mer.train.train_speech import average_weights

    torch.manual_seed(0)
    model = AudioCNN(10, 8, "level")
    first = {k: v.clone() for k, v in model.state_dict().items()}
    second = {k: v + 1.0 if v.is_floating_point() else v for k, v in first.items()}
    batches = [(torch.randn(8, 10, 157) * 3 + 2, None) for _ in range(3)]
    average_weights(model, [first, second], batches)
    got = model.state_dict()
    weight = "conv1d_0.0.weight"
    assert torch.allclose(got[weight], first[weight] + 0.5)
    # The first block's running mean is the mean of its conv outputs over all three batches.
    with torch.no_grad():
        conv = torch.cat([model.conv1d_0[0](model.normalise(x)) for x, _ in batches])
    assert torch.allclose(got["conv1d_0.1.running_mean"], conv.mean((0, 2)), atol=1e-4)
    assert not torch.allclose(got["conv1d_0.1.running_mean"], first["conv1d_0.1.running_mean"] + 0.5)
    assert not model.training


@pytest.mark.parametrize("dilation, span", [(1, 13), (2, 35), (3, 85)])
def test_audio_dilation_widens_the_receptive_field_and_keeps_the_stage_lengths(dilation, span):
    """One output frame of the audio branch depends on `span` input frames (0.3 s at dilation 1,
    0.8 s at 2, 2 s at 3), and both stages keep the lengths the fusions attend over."""
    import torch

    from mer.train.audio_cnn import AudioCNN

    torch.manual_seed(0)
    model = AudioCNN(10, 8, "none", dilation=dilation).eval()
    x = torch.randn(16, 10, 157, requires_grad=True)  # many inputs: a max-pool passes gradient to one of two
    stage1 = model.forward_stage1(x)
    stage2 = model.forward_stage2(stage1)
    assert (stage1.shape[-1], stage2.shape[-1]) == (151, 145)
    stage2[:, :, 72].sum().backward()
    seen = np.flatnonzero(x.grad.abs().sum((0, 1)).numpy())
    assert seen[-1] - seen[0] + 1 == span


def test_face_mismatch_shows_another_face_class_at_about_the_share_asked():
    from mer.train.train_fusion import FACE_CLASSES, mismatch

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 4000)
    own = np.where(labels == 1, 0, labels)  # calm's face is neutral's
    assert np.array_equal(mismatch(labels, 0.0, rng), own)
    shown = mismatch(labels, 0.3, rng)
    swapped = shown != own
    assert 0.27 < swapped.mean() < 0.33
    assert set(np.unique(shown)) <= set(FACE_CLASSES)  # never "calm", never the clip's own face


def test_tfeid_share_draws_studio_faces_where_the_emotion_has_them():
    """--tfeid-share: about that share of training clips get a TFEID training performer's photo (calm
    a neutral one), never a held-out performer's; an emotion TFEID lacks keeps the whole pool; at 0
    the draws are exactly the uniform ones (same generator calls, so old runs replay)."""
    from mer.train.face_features import FaceFeatures
    from mer.train.train_fusion import FacePools, pair_faces, train_faces

    labels_img = np.array([0, 3, 4] * 20 + [0, 3] * 5 + [0, 3] * 3)
    source = np.array(["ferplus:train"] * 60 + ["tfeid:07"] * 10 + ["tfeid:24"] * 6)
    faces = FaceFeatures(np.zeros((len(labels_img), 4, 8), np.float16), labels_img, source)
    pools = FacePools.split(faces, ("24",))
    studio = set(range(60, 70))
    assert set(pools.train_tfeid[0]) | set(pools.train_tfeid[3]) == studio and len(pools.train_tfeid[4]) == 0

    clips = np.random.default_rng(0).choice([0, 1, 3, 4], 4000)
    uniform = pair_faces(clips, pools.train, np.random.default_rng(5))
    assert np.array_equal(train_faces(clips, pools, np.random.default_rng(5), 0.0), uniform)
    shown = train_faces(clips, pools, np.random.default_rng(5), 0.5)
    assert np.array_equal(labels_img[shown], np.where(clips == 1, 0, clips))  # always the clip's own emotion
    from_studio = np.isin(shown, list(studio))
    assert not np.isin(shown, np.arange(70, 76)).any()                     # held-out performers never
    assert not from_studio[clips == 4].any()                                # TFEID has no face of class 4 here
    has = np.isin(clips, [0, 1, 3])
    # the share asked, plus the uniform draws' own studio faces (5 of 25 per emotion): about 0.6
    assert 0.5 < from_studio[has].mean() < 0.75


def test_ship_trains_and_writes_a_loadable_checkpoint(tmp_path, monkeypatch):
    """`mer-train ship` end to end on small synthetic features (the real ones need ../shared and
    an hour): it trains, writes a checkpoint that loads, and says what trained it."""
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.checkpoint import load_checkpoint
    from mer.train.efficientface import EfficientFaceTemporal
    from mer.train.face_features import FaceFeatures
    from mer.train.speech_views import SpeechViews
    from mer.train.train_fusion import FacePools

    rng = np.random.default_rng(0)
    n, m = 48, 70
    views = SpeechViews(rng.standard_normal((n, 6, 40, 157)).astype(np.float32), rng.integers(0, 8, n),
                        np.array(["ravdess", "tess"] * (n // 2)), np.array(["ravdess:03", "tess:OAF"] * (n // 2)),
                        ["x"] * n)
    faces = FaceFeatures(rng.standard_normal((m, 4, 1024)).astype(np.float16), np.array([0, 2, 3, 4, 5, 6, 7] * 10),
                         np.array(["ferplus:train"] * 42 + ["ferplus:valid"] * 14 + ["ferplus:test"] * 14),
                         video=rng.standard_normal((m, 4, 1024)).astype(np.float16))
    trunk_state = {k: v for k, v in EfficientFaceTemporal().state_dict().items()
                   if not k.startswith(("conv1d", "classifier"))}
    trunk = tmp_path / "trunk.pt"
    torch.save({"state_dict": trunk_state, "video_aug": 0.5}, trunk)
    monkeypatch.setattr(cli, "_fusion_inputs", lambda corpora, path, recipe: (
        views, cli._corpora(corpora), faces, FacePools.split(faces, ("24",)), trunk_state))
    out = tmp_path / "ia.pt"
    result = CliRunner().invoke(cli.main, ["ship", "--fusion", "ia", "--corpora", "ravdess,tess", "--epochs", "1",
                                           "--draws", "16", "--audio-init", "none", "--face-mismatch", "0.3",
                                           "--consistency", "3", "--face-video", "0.5",
                                           "--tfeid-share", "0.25", "--trunk", str(trunk), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model, spec, trained_on = load_checkpoint(out, "ia")
    assert spec.n_mfcc == 10 and model.config()["audio_norm"] == "level"
    assert "30% of audiovisual clips with a face of another emotion" in trained_on
    assert "recording-condition consistency 3" in trained_on
    assert "fine-tuned with video degradations" in trained_on
    assert "50% of face frames degraded as video" in trained_on
    assert "25% of clips shown a TFEID face" in trained_on


def test_face_clips_draw_degraded_frames_only_when_asked():
    """--face-video: each frame of a training clip is, with the given probability, the same view of
    the same image as video degrades it; at 0 a clip is exactly what it always was (same draws)."""
    from mer.train.face_features import FaceFeatures

    n, views = 5, 4
    clean = (np.arange(n)[:, None, None] * 10 + np.arange(views)[None, :, None]).astype(np.float16)
    faces = FaceFeatures(np.broadcast_to(clean, (n, views, 8)), np.zeros(n, np.int64), np.array(["ferplus:train"] * n),
                         video=-np.broadcast_to(clean, (n, views, 8)) - 1)
    plain = faces.clip(3, np.random.default_rng(7))
    assert np.array_equal(plain, faces.clip(3, np.random.default_rng(7), video=0.0))
    assert np.all(plain[:, 0] >= 30) and np.all(plain[:, 0] < 40)        # image 3's clean views
    degraded = faces.clip(3, np.random.default_rng(7), video=1.0)
    assert np.array_equal(degraded, -plain - 1)                            # the same views, degraded
    mixed = faces.clip(3, np.random.default_rng(7), frames=400, video=0.5)
    share = float((mixed[:, 0] < 0).mean())
    assert 0.4 < share < 0.6


def test_paired_batches_show_each_utterance_in_two_different_views():
    """--consistency: rows [:n] and [n:] of a batch are the same utterances (same labels), never in
    the same view, and the rows per epoch stay `draws` (the cost of an epoch does not change)."""
    from mer.train.speech_views import SpeechViews
    from mer.train.train_speech import SpeechRecipe, _paired_batches

    rng = np.random.default_rng(0)
    n = 40
    # Each view of each utterance is a constant: its utterance * 10 + view, so the rows say what they are.
    mfcc = (np.arange(n)[:, None] * 10 + np.arange(6)[None]).astype(np.float32)[:, :, None, None]
    views = SpeechViews(np.broadcast_to(mfcc, (n, 6, 40, 157)), rng.integers(0, 8, n), np.array(["ravdess"] * n),
                        np.array(["ravdess:03"] * n), ["x"] * n)
    recipe = SpeechRecipe(time_masks=0, batch=16)
    rows = 0
    for x, y in _paired_batches(views, np.arange(n), np.full(n, 1 / n), recipe, rng, 96):
        a, b = np.split(x[:, 0, 0].numpy(), 2)
        assert np.array_equal(a // 10, b // 10) and np.array_equal(y[: len(a)], y[len(a):])
        assert np.all(a % 10 != b % 10)
        rows += len(x)
    assert rows == 96


def test_consistency_loss_is_zero_only_when_both_views_agree():
    import torch

    from mer.train.train_speech import consistency_loss

    same = torch.randn(4, 8)
    assert consistency_loss(torch.cat([same, same])).item() < 1e-6
    a = torch.full((4, 8), -10.0); a[:, 0] = 10.0
    b = torch.full((4, 8), -10.0); b[:, 1] = 10.0
    # Two confident, different answers: the divergence approaches its bound, ln 2.
    assert abs(consistency_loss(torch.cat([a, b])).item() - np.log(2)) < 1e-3


def test_an_ensembles_fold_runs_are_averaged_for_its_calibration_and_report(tmp_path):
    """`calibrate --runs A --runs B` and `report --ensemble A --ensemble B` score the mean of two
    runs' logits on the same folds; runs of other clips are refused, not averaged."""
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint, save_checkpoint
    from mer.train.fusion import MerModel

    rng = np.random.default_rng(0)
    parts = ("last_val", "last_test")
    labels = {f: {p: rng.integers(0, 8, 40) for p in parts} for f in ("test03-06", "test07-10")}
    runs = [tmp_path / "a", tmp_path / "b"]
    logits = {}
    for run in runs:
        (run / "ia").mkdir(parents=True)
        for fold, ys in labels.items():
            blob = {f"{p}_labels": ys[p] for p in parts}
            for p in parts:
                for c in ("audiovisual", "audio_only", "video_only"):
                    blob[f"{p}_{c}"] = rng.standard_normal((40, 8)).astype(np.float32) * 3
            np.savez(run / "ia" / f"{fold}-logits.npz", **blob)
            logits[run.name, fold] = blob
    bundled, spec, _ = load_checkpoint(bundled_checkpoint("ia"))  # a trained trunk: it reads a face and its mirror apart
    model = MerModel(**{k: v for k, v in bundled.config().items() if k != "mirror_faces"})  # starts unmirrored
    model.load_state_dict(bundled.state_dict())
    checkpoint = tmp_path / "ensemble.pt"
    save_checkpoint(checkpoint, model, spec, "test")
    invoke = CliRunner().invoke
    env = {"MER_SHARED": str(tiny_ferplus(tmp_path / "shared"))}
    result = invoke(cli.main, ["calibrate", "--runs", str(runs[0]), "--runs", str(runs[1]),
                               "--checkpoint", str(checkpoint)], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    written = json.loads((runs[0] / "ia" / "calibration-ensemble2.json").read_text())[0]
    mean = np.concatenate([(logits["a", f]["last_test_audiovisual"] + logits["b", f]["last_test_audiovisual"]) / 2
                           for f in labels])
    y = np.concatenate([labels[f]["last_test"] for f in labels])
    assert written["audiovisual"]["last_test"]["accuracy"] == pytest.approx(float((mean.argmax(1) == y).mean()))
    calibrated = load_checkpoint(checkpoint)[0]
    assert calibrated.temperature.tolist() == pytest.approx([written[c]["temperature"] for c in
                                                             ("audiovisual", "audio_only", "video_only")], abs=1e-4)
    assert written["video_only"]["fitted_on"].startswith("FER+ valid stills (n 6)")
    assert not calibrated.class_bias.any()
    # --face-alone-only: the face alone refitted as above, speech keeps the checkpoint's temperatures.
    with torch.no_grad():
        calibrated.temperature.copy_(torch.tensor([2.0, 3.0, 9.0]))
    save_checkpoint(checkpoint, calibrated, spec, "test")
    result = invoke(cli.main, ["calibrate", "--face-alone-only", "--checkpoint", str(checkpoint)], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert load_checkpoint(checkpoint)[0].temperature.tolist() == pytest.approx(
        [2.0, 3.0, written["video_only"]["temperature"]], abs=1e-4)
    # --mirror-faces: set in the checkpoint's config, and the face alone refitted with it on (these
    # FER+ faces come in mirrored pairs, so mirrored, each pair gets one answer and another fit).
    result = invoke(cli.main, ["calibrate", "--face-alone-only", "--mirror-faces", "--checkpoint", str(checkpoint)],
                    env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    blob = torch.load(checkpoint, weights_only=False)
    assert blob["config"]["mirror_faces"] is True and blob["calibration"]["video_only"]["mirror_faces"] is True
    assert load_checkpoint(checkpoint)[0].mirror_faces
    assert blob["calibration"]["video_only"]["temperature"] != pytest.approx(written["video_only"]["temperature"])
    result = invoke(cli.main, ["calibrate", "--face-alone-only", "--no-mirror-faces", "--checkpoint", str(checkpoint)],
                    env=env)
    assert result.exit_code == 0 and "mirror_faces" not in torch.load(checkpoint, weights_only=False)["config"]
    assert load_checkpoint(checkpoint)[0].temperature[2].item() == pytest.approx(written["video_only"]["temperature"],
                                                                                 abs=1e-4)
    # --speech-from: a face-head refit of a calibrated model takes that model's speech temperatures.
    donor = tmp_path / "donor.pt"
    with torch.no_grad():
        calibrated.temperature.copy_(torch.tensor([1.5, 2.5, 7.0]))
    save_checkpoint(donor, calibrated, spec, "donor")
    result = invoke(cli.main, ["calibrate", "--face-alone-only", "--speech-from", str(donor), "--checkpoint",
                               str(checkpoint)], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert load_checkpoint(checkpoint)[0].temperature.tolist() == pytest.approx(
        [1.5, 2.5, written["video_only"]["temperature"]], abs=1e-4)
    result = invoke(cli.main, ["calibrate", "--speech-from", str(donor), "--checkpoint", str(checkpoint)], env=env)
    assert result.exit_code == 2 and "--speech-from goes with --face-alone-only" in result.output

    result = invoke(cli.main, ["report", "--runs", str(tmp_path), "--ensemble", str(runs[0]), "--ensemble", str(runs[1])])
    assert result.exit_code == 0, result.output + repr(result.exception)
    fold_accs = [float((((logits["a", f]["last_test_audio_only"] + logits["b", f]["last_test_audio_only"]) / 2)
                         .argmax(1) == labels[f]["last_test"]).mean()) for f in labels]
    row = next(r for r in result.output.splitlines() if "ensemble of 2 (speech, no face)" in r)
    assert f"{100 * np.mean(fold_accs):.1f} ± {100 * np.std(fold_accs):.1f}" in row

    np.savez(runs[1] / "ia" / "test07-10-logits.npz", **{**logits["b", "test07-10"],
                                                       "last_test_labels": (labels["test07-10"]["last_test"] + 1) % 8})
    result = invoke(cli.main, ["calibrate", "--runs", str(runs[0]), "--runs", str(runs[1]),
                               "--checkpoint", str(checkpoint)], env=env)
    assert result.exit_code == 1 and "not the same folds" in result.output
    result = invoke(cli.main, ["calibrate", "--checkpoint", str(checkpoint)], env={"MER_SHARED": str(tmp_path / "none")})
    assert result.exit_code == 1 and "ferplus.npz: not found" in result.output


def tiny_ferplus(shared):
    """A FER+-format file of six real faces (the test face, grey 48x48, and its mirror image, as
    FER+ stores them) in each of the valid and test splits, each given a clear vote."""
    import cv2

    from mer.train.face_data import FERPLUS_TO_MER

    grey = cv2.resize(cv2.cvtColor(read_face(), cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    images = np.stack([grey, grey[:, ::-1]] * 6)
    classes = list(FERPLUS_TO_MER)
    votes = np.zeros((12, len(classes)), np.int64)
    votes[np.arange(12), np.arange(12) % 6] = 10   # neutral, happiness, surprise, sadness, anger, disgust
    (shared / "data" / "faces").mkdir(parents=True)
    np.savez(shared / "data" / "faces" / "ferplus.npz", images=images, votes=votes, vote_classes=np.array(classes),
             split=np.array(["valid"] * 6 + ["test"] * 6))
    return shared


def tiny_face_tree(shared):
    """The trunk trainer's data at its smallest: FER+ (4 train, 4 valid, 4 test) and a TFEID tree of
    one real face twice (performer 03 happy, 24 sad: a training and a held-out performer)."""
    import cv2

    shared = tiny_ferplus(shared)
    blob = dict(np.load(shared / "data" / "faces" / "ferplus.npz"))
    blob["split"] = np.array(["train"] * 4 + ["valid"] * 4 + ["test"] * 4)
    np.savez(shared / "data" / "faces" / "ferplus.npz", **blob)
    tfeid = shared / "data" / "faces" / "tfeid"
    (tfeid / "images").mkdir(parents=True)
    face = read_face()
    rows = ["file,performer,performance_type,view,expression"]
    for i, (performer, expression) in enumerate([("03", "happy"), ("24", "sad")]):
        cv2.imwrite(str(tfeid / "images" / f"{i}.jpg"), cv2.copyMakeBorder(face, 60, 60, 60, 60, cv2.BORDER_CONSTANT)[:, :, ::-1])
        rows.append(f"{i}.jpg,{performer},0,1,{expression}")
    (tfeid / "labels.csv").write_text("\n".join(rows) + "\n")
    return shared


def test_face_pretraining_keeps_a_moving_average_and_the_classifier_it_started_from(tmp_path):
    """`mer-train faces --ema`: each epoch scores the averaged weights too and keeps whichever FER+
    valid prefers (the checkpoint says which), the average resumes with the run, and `--init` starts
    from the trunk's classifier as well as its trunk. On real faces: a FER+-format file of one face
    and a TFEID-format tree of two, re-cropped by the runtime's cropper."""
    import torch
    from click.testing import CliRunner

    from mer.train.cli import faces as pretrain

    shared = tiny_face_tree(tmp_path / "shared")
    args = ["--epochs", "2", "--batch", "2", "--size", "64", "--threads", "1", "--ema", "0.5", "--tfeid-repeat", "2"]
    runner = CliRunner(env={"MER_SHARED": str(shared)})
    result = runner.invoke(pretrain, ["--out", str(tmp_path / "a"), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] and all("ema" in r and "ferplus_valid" in r["ema"] for r in log)
    best = torch.load(tmp_path / "a" / "best_trunk.pt", weights_only=False)
    assert isinstance(best["averaged"], bool) and "ema" in torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    result = runner.invoke(pretrain, ["--out", str(tmp_path / "a"), *args])
    assert result.exit_code == 0 and "resumed from epoch 1" in result.output
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 2
    # --init: the first step starts from the classifier the trunk kept, not a random one.
    result = runner.invoke(pretrain, ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "best_trunk.pt"),
                                      "--epochs", "1", "--seed", "2", *args[2:]])  # another seed: another random head
    assert result.exit_code == 0, result.output + repr(result.exception)
    again = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    drift = (again["fc.weight"] - best["fc"]["weight"]).abs().max()
    assert drift < 0.5 * best["fc"]["weight"].abs().max()


def test_a_face_pack_carries_the_faces_and_trains_on_the_clock_without_shared(tmp_path, monkeypatch):
    """`python -m mer.train.face_pack` then `mer-train faces --pack --budget-s`: FER+ faces travel
    lossless, TFEID as the runtime cropper framed them; training reads the pack alone (no ../shared,
    no MediaPipe needed), scores no FER+ test the pack left behind, stops on the clock and keeps no
    resumable state. On real faces (the tiny FER+-format file and TFEID tree above)."""
    import torch
    from click.testing import CliRunner

    from mer.train import face_pack
    from mer.train.face_data import load_ferplus, load_tfeid
    from mer.train.cli import faces as pretrain

    shared = tiny_face_tree(tmp_path / "shared")
    tfeid = shared / "data" / "faces" / "tfeid"
    monkeypatch.setenv("MER_SHARED", str(shared))
    pack = tmp_path / "faces.pack.npz"
    result = CliRunner().invoke(face_pack.main, [str(pack), "--splits", "train,valid"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "FER+ {'train': 4, 'valid': 4}" in result.output and "TFEID 2 crops" in result.output
    fer, crops = face_pack.read(pack)
    original = load_ferplus(shared / "data" / "faces" / "ferplus.npz")
    kept = np.isin(original.groups, ("train", "valid"))
    assert np.array_equal(fer.images, original.images[kept])                  # lossless
    assert np.array_equal(fer.targets, original.targets[kept]) and list(fer.groups) == list(original.groups[kept])
    direct = load_tfeid(tfeid)
    assert crops.images.shape == direct.images.shape and list(crops.groups) == ["03", "24"]
    assert np.abs(crops.images.astype(int) - direct.images.astype(int)).mean() < 3   # JPEG q95 of the same crops

    monkeypatch.setenv("MER_SHARED", str(tmp_path / "nothing-here"))
    # Bad input: one line naming the file and the reason, exit 1, nothing written.
    result = CliRunner().invoke(face_pack.main, [str(tmp_path / "other.npz")])
    assert result.exit_code == 1 and "ferplus.npz: not found" in result.output and not (tmp_path / "other.npz").exists()
    (tmp_path / "junk.npz").write_text("not a pack")
    result = CliRunner().invoke(pretrain, ["--out", str(tmp_path / "junk-run"), "--pack", str(tmp_path / "junk.npz")])
    assert result.exit_code == 1 and "junk.npz: not a face pack" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "junk-run").exists()
    out = tmp_path / "run"
    result = CliRunner().invoke(pretrain, ["--out", str(out), "--pack", str(pack), "--budget-s", "2", "--batch", "2",
                                           "--size", "64", "--threads", "1", "--mixup", "0.2", "--video-aug", "0.5",
                                           "--tfeid-repeat", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all(r["ferplus_test"] is None and r["ferplus_valid"]["n"] == 4 for r in log)
    best = torch.load(out / "best_trunk.pt", weights_only=False)
    assert best["budget_s"] == 2 and best["mixup"] == 0.2 and not (out / "last.pt").exists()
    # Scored where the data is: eval-faces gives each set's confusion matrix beside its accuracy.
    from mer.train import cli

    result = CliRunner(env={"MER_SHARED": str(shared)}).invoke(cli.main, ["eval-faces", "--trunk", str(out / "best_trunk.pt")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    scores = json.loads(result.output.strip().splitlines()[-1])
    for name, n in (("ferplus_test", 4), ("tfeid_performers_24-25-26-27-28-29", 1)):
        cm = np.array(scores[name]["confusion"])
        assert cm.shape == (8, 8) and cm.sum() == scores[name]["n"] == n
        assert scores[name]["accuracy"] == np.trace(cm) / n and 0 <= scores[name]["uar"] <= 1
    # A photo is read as the runtime shows one (views, by default), or as one crop (--still copies);
    # TFEID's views are cut from the whole photo, the first of them the plain crop.
    assert scores["still"] == "views"
    result = CliRunner(env={"MER_SHARED": str(shared)}).invoke(
        cli.main, ["eval-faces", "--trunk", str(out / "best_trunk.pt"), "--still", "copies"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads(result.output.strip().splitlines()[-1])["still"] == "copies"
    held = load_tfeid(tfeid, performers=("24",))
    views = load_tfeid(tfeid, performers=("24",), views=True)
    assert views.images.shape == (1, 15, 112, 112, 3) and np.array_equal(views.images[0, 0], held.images[0])
    assert np.abs(np.diff(views.images[0].astype(int), axis=0)).max() > 0 and list(views.labels) == list(held.labels)
    from mer.train.face_clips import views_evaluate
    from mer.train.pretrain_faces import face_logits

    classifier = cli._trunk_classifier(out / "best_trunk.pt")[0].eval()
    with torch.no_grad():
        mean = face_logits(classifier, torch.from_numpy(views.images[0]).permute(0, 3, 1, 2).float() / 255).mean(0)
    assert views_evaluate(classifier, views.images, views.labels, 112)["confusion"][int(held.labels[0])][int(mean.argmax())] == 1
    # Camera conditions: the held-out photo made into a camera's frame, found and cropped by the
    # runtime's cropper; a tilt is also cropped upright. A line per condition.
    runner = CliRunner(env={"MER_SHARED": str(shared)})
    result = runner.invoke(cli.main, ["eval-camera", "--trunk", str(out / "best_trunk.pt"),
                                      "--conditions", "clean,tilt-30,dark,far"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(line) for line in result.output.strip().splitlines() if line.startswith("{")]
    assert [r["condition"] for r in rows] == ["clean", "tilt-30", "dark", "far"]
    assert all(r["n"] == 1 and r["faces_found"] in ("0/1", "1/1") for r in rows)
    assert rows[1]["upright"]["n"] == 1 and all("upright" not in r for r in rows[:1] + rows[2:])
    tilted = {level: load_tfeid(tfeid, performers=("24",), condition="tilt-30", level=level).images for level in (True, False)}
    assert tilted[True].shape == (1, 112, 112, 3) and np.abs(tilted[True].astype(int) - tilted[False]).mean() > 5
    result = runner.invoke(cli.main, ["eval-camera", "--trunk", str(out / "best_trunk.pt"), "--conditions", "fog"])
    assert result.exit_code == 2 and "fog: not a camera condition" in result.output
    result = runner.invoke(cli.main, ["eval-camera"])
    assert result.exit_code == 2 and "one of --trunk or --model" in result.output
    result = runner.invoke(cli.main, ["eval-camera", "--trunk", str(out / "best_trunk.pt"), "--exposure", "200,100"])
    assert result.exit_code == 2 and "LOW <= HIGH" in result.output


def test_combine_writes_one_checkpoint_of_heads_on_one_trunk_or_says_why_not(tmp_path):
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.checkpoint import load_checkpoint, save_checkpoint, untrained

    a, spec, _ = untrained("ia", seed=0)
    b, _, _ = untrained("ia", seed=1)
    save_checkpoint(tmp_path / "a.pt", a, spec, "run a")
    save_checkpoint(tmp_path / "other-trunk.pt", b, spec, "run b")
    b.visual_model.load_state_dict({k: v for k, v in a.visual_model.state_dict().items()
                                    if not k.startswith(("conv1d", "classifier"))}, strict=False)
    save_checkpoint(tmp_path / "b.pt", b, spec, "run b")
    invoke = CliRunner().invoke
    result = invoke(cli.main, ["combine", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "e.pt")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model, _, trained_on = load_checkpoint(tmp_path / "e.pt", "ia")
    assert model.config()["members"] == 2 and "run a | run b" in trained_on
    result = invoke(cli.main, ["combine", str(tmp_path / "a.pt"), str(tmp_path / "other-trunk.pt"),
                               "--out", str(tmp_path / "f.pt")])
    assert result.exit_code == 1 and "another face trunk" in result.output and not (tmp_path / "f.pt").exists()


def two_head_ensemble(path):
    """Two untrained `ia` heads on one trunk, saved joined at `path` (`combine`); returns the heads."""
    from mer.train.checkpoint import save_checkpoint, untrained
    from mer.train.fusion import combine

    a, spec, _ = untrained("ia", seed=0)
    b, _, _ = untrained("ia", seed=1)
    b.visual_model.load_state_dict({k: v for k, v in a.visual_model.state_dict().items()
                                    if not k.startswith(("conv1d", "classifier"))}, strict=False)
    save_checkpoint(path, combine([a, b]), spec, "two heads")
    return a, b


def test_audio_branch_takes_one_heads_audio_branch_out_of_an_ensemble_as_an_audio_init(tmp_path):
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.train_fusion import FusionRecipe

    a, b = two_head_ensemble(tmp_path / "e.pt")
    invoke = CliRunner().invoke
    result = invoke(cli.main, ["audio-branch", str(tmp_path / "e.pt"), "--member", "1", "--out", str(tmp_path / "b.pt")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # What `ship --audio-init` reads: the second head's branch, not the first's, and its origin.
    state = cli._audio_state(tmp_path / "b.pt", FusionRecipe(fusion="ia", audio_norm="none"))
    ours, theirs = b.audio_model.state_dict(), a.audio_model.state_dict()
    assert all(torch.equal(state[k], ours[k]) for k in ours)
    assert not all(torch.equal(state[k], theirs[k]) for k in theirs)
    assert f"fusion head 1 of {tmp_path / 'e.pt'}" in cli._audio_origin(tmp_path / "b.pt")
    result = invoke(cli.main, ["audio-branch", str(tmp_path / "e.pt"), "--member", "2", "--out", str(tmp_path / "c.pt")])
    assert result.exit_code == 2 and "0 to 1" in result.output and not (tmp_path / "c.pt").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = invoke(cli.main, ["audio-branch", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "c.pt")])
    assert result.exit_code == 1 and "junk.pt: not a torch checkpoint" in result.output and not (tmp_path / "c.pt").exists()
    # Every command that reads a checkpoint a user names says the same in one line: an audio init,
    # a checkpoint to calibrate, one to take speech temperatures from.
    import click
    import pytest

    with pytest.raises(click.ClickException, match="junk.pt: not a torch checkpoint"):
        cli._audio_state(tmp_path / "junk.pt", FusionRecipe(fusion="ia", audio_norm="none"))
    for args in (["--checkpoint", str(tmp_path / "junk.pt")],
                 ["--checkpoint", str(tmp_path / "e.pt"), "--face-alone-only", "--speech-from", str(tmp_path / "junk.pt")]):
        result = invoke(cli.main, ["calibrate", *args])
        assert result.exit_code == 1 and result.output.strip().splitlines() == [
            f"Error: {tmp_path / 'junk.pt'}: not a torch checkpoint (UnpicklingError)"], result.output
    torch.save([1, 2], tmp_path / "list.pt")
    result = invoke(cli.main, ["calibrate", "--checkpoint", str(tmp_path / "list.pt")])
    assert result.exit_code == 1 and "list.pt: not a checkpoint of this project (a list)" in result.output


def test_a_face_head_refit_starts_from_a_trained_fusion_and_trains_only_the_temporal_face_head(tmp_path):
    import click
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.checkpoint import bundled_checkpoint, untrained
    from mer.train.train_fusion import FusionRecipe, build_model, param_groups

    a, b = two_head_ensemble(tmp_path / "e.pt")
    recipe = FusionRecipe(fusion="ia", audio_norm="none", face_head_only=True)
    head = cli._head_state(tmp_path / "e.pt", recipe, member=1)
    new_trunk = untrained("ia", seed=2)[0].visual_model.state_dict()
    trunk = {k: v for k, v in new_trunk.items() if not k.startswith(("conv1d", "classifier"))}
    model = build_model(recipe, trunk, None, head)
    state, theirs = model.state_dict(), b.state_dict()
    # Head 1's audio branch, attention and classifier; the new trunk under them.
    for k in ("audio_model.conv1d_0.0.weight", "av1.q.weight", "classifier_1.0.weight", "visual_model.conv1d_0.0.weight"):
        assert torch.equal(state[k], theirs[k]), k
    assert all(torch.equal(state[f"visual_model.{k}"], v) for k, v in trunk.items())
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("visual_model.conv1d") for n in trained)
    assert sum(len(g["params"]) for g in param_groups(model, recipe)) == len(trained)
    # The bundled model carries a face-alone classifier over its own trunk's features: a head taken
    # from it leaves that behind (it would read the new trunk's features wrongly) and builds.
    shipped = FusionRecipe(fusion="ia", audio_dilation=2, face_head_only=True)
    head0 = cli._head_state(bundled_checkpoint("ia"), shipped, member=0)
    assert not [k for k in head0 if k.startswith("face_classifier")]
    assert not build_model(shipped, trunk, None, head0).config().get("face_classifier")
    # A refit needs something to refit; an ensemble's head out of range is refused in one line.
    result = CliRunner().invoke(cli.main, ["ship", "--face-head-only", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "--face-head-only needs --init-fusion" in result.output
    with pytest.raises(click.BadParameter, match="2 fusion head"):
        cli._head_state(tmp_path / "e.pt", recipe, member=2)
    with pytest.raises(click.ClickException, match="n_mfcc, norm"):
        cli._head_state(tmp_path / "e.pt", FusionRecipe(fusion="ia"), member=0)  # trained without --audio-norm level


def test_speech_ensemble_scores_each_run_and_their_mean_on_a_folds_test_actors(tmp_path, monkeypatch):
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.audio_cnn import AudioCNN
    from mer.train.speech_views import SpeechViews

    rng = np.random.default_rng(0)
    speakers = np.array([f"ravdess:{a:02d}" for a in range(3, 25) for _ in range(4)])
    n = len(speakers)
    views = SpeechViews(rng.standard_normal((n, 2, 40, 157)).astype(np.float32), rng.integers(0, 8, n),
                        np.array(["ravdess"] * n), speakers, ["x"] * n)
    monkeypatch.setattr(cli, "_views", lambda: views)
    test = np.flatnonzero(np.isin(speakers, [f"ravdess:{a:02d}" for a in range(3, 7)]))
    logits = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        branch = AudioCNN(10, 8, "level", 1, 2).eval()
        (tmp_path / f"s{seed}").mkdir()
        torch.save({"state_dict": branch.state_dict(), "input_norm": "level", "n_mfcc": 10, "width": 1, "dilation": 2},
                   tmp_path / f"s{seed}" / "audio-test03-06.pt")
        with torch.no_grad():
            logits.append(branch(torch.from_numpy(views.features(test, 0, 10))).numpy())
    result = CliRunner().invoke(cli.main, ["speech-ensemble", str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    row = next(r for r in result.output.splitlines() if r.startswith("| test03-06"))
    expected = [(lg.argmax(1) == views.labels[test]).mean() for lg in (*logits, (logits[0] + logits[1]) / 2)]
    assert row == "| test03-06 | " + " | ".join(f"{100 * a:.1f}" for a in expected) + " |"
    assert "test07-10" not in result.output  # in no run: left out, not scored


def test_speech_report_scores_an_ensemble_of_loco_runs_against_an_ensemble_of_baselines(tmp_path, monkeypatch):
    import json

    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.audio_cnn import AudioCNN
    from mer.train.metrics import summarise
    from mer.train.speech_views import SpeechViews

    rng = np.random.default_rng(0)
    corpus = np.array(["ravdess"] * 40 + ["tess"] * 30)
    n = len(corpus)
    views = SpeechViews(rng.standard_normal((n, 2, 40, 157)).astype(np.float32), rng.integers(0, 8, n), corpus,
                        np.array([f"{c}:{i % 5}" for i, c in enumerate(corpus)]), ["x"] * n)
    monkeypatch.setattr(cli, "_views", lambda: views)
    tess = views.where("tess")

    def branch(seed: int, path) -> np.ndarray:
        torch.manual_seed(seed)
        b = AudioCNN(10, 8, "level", 1, 2).eval()
        path.parent.mkdir(exist_ok=True)
        torch.save({"state_dict": b.state_dict(), "input_norm": "level", "n_mfcc": 10, "width": 1, "dilation": 2}, path)
        with torch.no_grad():
            return b(torch.from_numpy(views.features(tess, 0, 10))).numpy()

    multi = [branch(s, tmp_path / f"loco{s}" / "audio-without-tess.pt") for s in (0, 1)]
    base = [branch(s, tmp_path / f"base{s}" / "audio-all.pt") for s in (2, 3)]
    for s in (0, 1):  # the result files the runs wrote: only their existence and the single-run figures are read
        (tmp_path / f"loco{s}" / "without-tess.json").write_text(json.dumps(
            {"last_epoch": {"test": {"accuracy": 0.5, "uar": 0.4, "n": 30}}}))
        (tmp_path / f"base{s + 2}" / "all.json").write_text(json.dumps(
            {"last_epoch": {"tess": {"accuracy": 0.25, "uar": 0.2, "n": 30}}}))
    (tmp_path / "loco1" / "without-emodb.json").write_text("{}")  # held out in one run only: not in the table
    invoke = CliRunner().invoke
    args = ["speech-report", "--folds", str(tmp_path / "none")]
    result = invoke(cli.main, args + ["--loco", str(tmp_path / "loco0"), "--baseline", str(tmp_path / "base2" / "all.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "| tess | 30 | 50.0 | 40.0 | 25.0 | 20.0 | +20.0 |" in result.output
    result = invoke(cli.main, args + ["--loco", str(tmp_path / "loco0"), "--loco", str(tmp_path / "loco1"),
                                      "--baseline", str(tmp_path / "base2" / "all.json"),
                                      "--baseline", str(tmp_path / "base3" / "all.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    t = summarise(views.labels[tess], np.mean(multi, axis=0).argmax(1))
    b = summarise(views.labels[tess], np.mean(base, axis=0).argmax(1))
    row = (f"| tess | 30 | {100 * t['accuracy']:.1f} | {100 * t['uar']:.1f} | {100 * b['accuracy']:.1f} | "
           f"{100 * b['uar']:.1f} | {100 * (t['uar'] - b['uar']):+.1f} |")
    assert row in result.output and "emodb" not in result.output and "2 multi-corpus runs" in result.output
    (tmp_path / "base3" / "audio-all.pt").unlink()
    result = invoke(cli.main, args + ["--loco", str(tmp_path / "loco0"), "--loco", str(tmp_path / "loco1"),
                                      "--baseline", str(tmp_path / "base2" / "all.json"),
                                      "--baseline", str(tmp_path / "base3" / "all.json")])
    assert result.exit_code == 1 and "no checkpoint to score the ensemble from" in result.output


def test_face_alone_scores_a_still_as_the_runtime_shows_it_and_a_clip_through_the_whole_graph():
    """eval-faces --model and calibrate: a still is read as the runtime shows a photo (15 views of
    its face through the graph), calibrated or raw; the old shortcut (trunk once, features shown 15
    times) gives what the graph gives 15 copies; a photo as a moving H.264 clip is found in every
    frame by the runtime's cropper; calm counts as neutral (a face alone cannot tell them apart)."""
    import cv2
    import torch

    from mer.runtime.faces import FaceCropper
    from mer.train.calibrate import face_scores, softmax
    from mer.train.checkpoint import untrained
    from mer.train.face_clips import face_alone_logits, face_alone_scores, photo_views

    model, spec, _ = untrained("ia", seed=3)
    model.temperature[2] = 0.5   # the face-alone condition's calibration is applied, the others' are not
    model.temperature[0] = 3.0
    face = read_face()
    images = np.stack([face, np.ascontiguousarray(face[:, ::-1])])
    cropper = FaceCropper(spec)
    try:
        stacks = photo_views(images, cropper=cropper)
        runtime = np.stack([cropper.views(im, cropper.framing(im.shape[1], im.shape[0])) for im in images])
    finally:
        cropper.close()
    np.testing.assert_array_equal(stacks, runtime)  # the runtime's own views of the photo
    assert stacks.shape == (2, spec.frames, 224, 224, 3) and np.abs(np.diff(stacks[0].astype(int), axis=0)).max() > 0
    logits, _ = face_alone_logits(model, images, as_clips=False)
    raw, _ = face_alone_logits(model, images, as_clips=False, calibrated=False)
    with torch.no_grad():
        graph = model.eval()(torch.from_numpy(stacks), torch.zeros(2, *spec.mfcc_shape)).numpy()
    np.testing.assert_allclose(logits, graph, atol=1e-4)
    np.testing.assert_allclose(raw, graph * 0.5, atol=1e-4)
    np.testing.assert_allclose(face_alone_logits(model, stacks, as_clips=False)[0], graph, atol=1e-4)  # stacks given
    copied, _ = face_alone_logits(model, images, as_clips=False, still="copies")
    copies = np.repeat(np.stack([cv2.resize(im, (224, 224), interpolation=cv2.INTER_LINEAR) for im in images])[:, None],
                       spec.frames, 1)
    with torch.no_grad():
        np.testing.assert_allclose(copied, model(torch.from_numpy(copies), torch.zeros(2, *spec.mfcc_shape)).numpy(),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="still must be one of"):
        face_alone_logits(model, images, as_clips=False, still="copy")
    clip_logits, found = face_alone_logits(model, images[:1], as_clips=True)
    assert found == spec.frames and clip_logits.shape == (1, 8)
    assert face_scores(np.array([[0.2, 0.3, 0.25, 0, 0, 0, 0, 0.25]])).argmax(1).tolist() == [0]  # calm + neutral
    labels = face_scores(softmax(logits)).argmax(1)
    row = face_alone_scores(model, images, labels, as_clips=False)
    assert row["accuracy"] == 1.0 and row["uar"] == 1.0 and row["n"] == 2 and 0 <= row["ece"] < 1


def test_a_mirrored_model_reads_every_other_frame_as_its_mirror_image():
    """mirror_faces: frames 1, 3, ... of each clip go through the trunk mirrored, the others as they
    are (so a still reads as itself and its mirror image, at no extra cost); the still shortcut of
    eval-faces and calibrate gives what the graph gives 15 copies, mirrored the same way."""
    import cv2
    import torch

    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.face_clips import face_alone_logits
    from mer.train.fusion import MerModel

    bundled, spec, _ = load_checkpoint(bundled_checkpoint("ia"))  # a trained trunk: an untrained one reads no face
    config = {k: v for k, v in bundled.config().items() if k != "mirror_faces"}
    plain, mirrored = MerModel(**config).eval(), MerModel(**config, mirror_faces=True).eval()
    plain.load_state_dict(bundled.state_dict())
    mirrored.load_state_dict(bundled.state_dict())
    assert mirrored.config()["mirror_faces"] is True and "mirror_faces" not in plain.config()
    face = cv2.resize(read_face(), (224, 224), interpolation=cv2.INTER_AREA)
    clips = np.stack([np.stack([np.roll(face, 4 * k + 30 * b, axis=1) for k in range(spec.frames)])
                      for b in range(2)])  # two faces moving sideways
    half_flipped = clips.copy()
    half_flipped[:, 1::2] = clips[:, 1::2, :, ::-1]
    mfcc = torch.randn(2, *spec.mfcc_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = mirrored.raw_logits(torch.from_numpy(clips), mfcc)
        np.testing.assert_allclose(got.numpy(), plain.raw_logits(torch.from_numpy(half_flipped), mfcc).numpy(),
                                   atol=1e-4)
        assert (got - plain.raw_logits(torch.from_numpy(clips), mfcc)).abs().max() > 1e-2  # it does mirror
        stills = mirrored.prepare_faces(torch.from_numpy(clips[:, :1]))
        np.testing.assert_allclose(
            mirrored.still_frame_features(stills).numpy(),
            mirrored.frame_features(mirrored.prepare_faces(torch.from_numpy(np.repeat(clips[:, :1], spec.frames, 1))))
            .numpy(), atol=1e-4)
        still = np.stack([read_face()])
        copies = np.repeat(cv2.resize(still[0], (224, 224), interpolation=cv2.INTER_LINEAR)[None, None], spec.frames, 1)
        graph = mirrored.raw_logits(torch.from_numpy(copies), torch.zeros(1, *spec.mfcc_shape)).numpy()
    np.testing.assert_allclose(face_alone_logits(mirrored, still, as_clips=False, calibrated=False, still="copies")[0],
                               graph, atol=1e-4)


def test_a_face_classifier_answers_the_face_alone_and_leaves_speech_as_it_was():
    """With a face classifier (`mer-train face-alone`), a clip given no speech is read by it (the mean
    of its frames' features, mirrored frames included), its log-probabilities mixed with the fusion
    head's at its share; a clip with speech exactly as before; the still shortcut of eval-faces and
    calibrate gives what the graph gives 15 copies."""
    import cv2
    import torch

    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.face_clips import face_alone_ends, face_alone_logits
    from mer.train.fusion import MerModel

    bundled, spec, _ = load_checkpoint(bundled_checkpoint("ia"))
    config = {k: v for k, v in bundled.config().items() if k != "face_classifier"}
    state = {k: v for k, v in bundled.state_dict().items() if not k.startswith("face_classifier")}
    plain, model = MerModel(**config), MerModel(**config, face_classifier=True)
    plain.load_state_dict(state)
    missing, _ = model.load_state_dict(state, strict=False)
    assert sorted(missing) == ["face_classifier.bias", "face_classifier.weight", "face_classifier_share"]
    torch.manual_seed(0)
    model.face_classifier.reset_parameters()
    model.eval()
    face = cv2.resize(read_face(), (224, 224), interpolation=cv2.INTER_AREA)
    clips = torch.from_numpy(np.stack([np.stack([np.roll(face, 4 * k + 30 * b, axis=1) for k in range(spec.frames)])
                                       for b in range(2)]))
    mfcc = torch.randn(2, *spec.mfcc_shape, generator=torch.Generator().manual_seed(0))
    mfcc[1] = 0  # the second clip is silent
    with torch.no_grad():
        got, before = model.raw_logits(clips, mfcc), plain.eval().raw_logits(clips, mfcc)
        frames = model.frame_features(model.prepare_faces(clips)).unflatten(0, (2, spec.frames))
        want = model.face_classifier(frames[1]).mean(0).log_softmax(-1)
        assert model.config()["face_classifier"] is True
        np.testing.assert_allclose(got[0].numpy(), before[0].numpy(), atol=1e-5)  # speech: as it was
        np.testing.assert_allclose(got[1].numpy(), want.numpy(), atol=1e-4)       # silent: the classifier
        assert (got[1] - before[1]).abs().max() > 0.1
        model.face_classifier_share.fill_(0.25)  # a share: the log-probabilities mixed
        np.testing.assert_allclose(model.raw_logits(clips, mfcc)[1].numpy(),
                                   (0.25 * want + 0.75 * before[1].log_softmax(-1)).numpy(), atol=1e-4)
        still = np.stack([read_face()])
        copies = np.repeat(cv2.resize(still[0], (224, 224), interpolation=cv2.INTER_LINEAR)[None, None], spec.frames, 1)
        graph = model.raw_logits(torch.from_numpy(copies), torch.zeros(1, *spec.mfcc_shape)).numpy()
    np.testing.assert_allclose(face_alone_logits(model, still, as_clips=False, calibrated=False, still="copies")[0],
                               graph, atol=1e-4)
    # The two ends the share is chosen between (mer-train face-alone), from one trunk pass over the
    # photo's views: what the graph answers at share 0 and at share 1; the model's share is left as it was.
    head, classifier = face_alone_ends(model, still)
    assert float(model.face_classifier_share) == 0.25
    for share, got in ((0.0, head), (1.0, classifier)):
        model.face_classifier_share.fill_(share)
        want = torch.from_numpy(face_alone_logits(model, still, as_clips=False, calibrated=False)[0]).log_softmax(-1)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_the_face_classifier_learns_from_the_trunks_training_faces_only():
    """`face_classifier.fit` reads FER+ train and TFEID's training performers (those repeated), never
    FER+ valid/test or TFEID's held-out performers, from clean and video views, and learns them."""
    from mer.train.face_classifier import TFEID_REPEAT, fit, training_rows
    from mer.train.face_features import FaceFeatures

    rng = np.random.default_rng(0)
    source = np.array(["ferplus:train"] * 60 + ["ferplus:test"] * 20 + ["tfeid:03"] * 10 + ["tfeid:24"] * 10)
    labels = np.tile([0, 2, 3, 4, 5, 6, 7, 2, 3, 4], 10)
    centres = rng.standard_normal((8, 1024)).astype(np.float32)
    views = centres[labels][:, None] + 0.5 * rng.standard_normal((100, 4, 1024)).astype(np.float32)
    faces = FaceFeatures(views.astype(np.float16), labels, source, video=(views[:, ::-1] * 0.9).astype(np.float16))
    rows = training_rows(faces)
    assert sorted(set(source[rows])) == ["ferplus:train", "tfeid:03"]
    assert (source[rows] == "tfeid:03").sum() == 10 * TFEID_REPEAT
    fc = fit(faces, epochs=20)
    import torch

    with torch.no_grad():
        pred = fc(torch.from_numpy(views[source == "ferplus:test", 0])).argmax(1).numpy()
    assert (pred == labels[source == "ferplus:test"]).mean() == 1.0


def test_a_models_own_trunk_is_written_once_named_by_its_weights(tmp_path, monkeypatch):
    """`face-alone` without --trunk fits on MODEL's own trunk: written once as a trunk checkpoint
    named by its weights (so its cached features are reused), holding exactly the trunk's tensors."""
    import torch

    from mer.train import cli
    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.fusion import TRUNK_MODULES

    monkeypatch.setattr(cli, "RUNS", tmp_path)
    visual = load_checkpoint(bundled_checkpoint("ia"))[0].visual_model.state_dict()
    path = cli._trunk_file(visual, 112, bundled_checkpoint("ia"))
    stamp = path.stat().st_mtime_ns
    assert cli._trunk_file(visual, 112, bundled_checkpoint("ia")) == path and path.stat().st_mtime_ns == stamp
    blob = torch.load(path, weights_only=False)
    assert blob["size"] == 112 and set(blob["state_dict"]) == {k for k in visual if k.split(".")[0] in TRUNK_MODULES}
    assert all(torch.equal(v, visual[k]) for k, v in blob["state_dict"].items())
    other = {k: v + 1 if k == "conv1.0.weight" else v for k, v in visual.items()}
    assert cli._trunk_file(other, 112, bundled_checkpoint("ia")) != path


def test_face_alone_refuses_a_trunk_that_is_not_the_models(tmp_path):
    import torch
    from click.testing import CliRunner

    from mer.train.checkpoint import bundled_checkpoint
    from mer.train.cli import main
    from mer.train.efficientface import EfficientFaceTemporal

    torch.manual_seed(0)
    other = tmp_path / "other_trunk.pt"
    torch.save({"state_dict": EfficientFaceTemporal().state_dict(), "size": 112}, other)
    result = CliRunner().invoke(main, ["face-alone", str(bundled_checkpoint("ia")), "--trunk", str(other),
                                       "--out", str(tmp_path / "ia.pt")])
    assert result.exit_code == 1 and "not the face trunk inside" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "ia.pt").exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["face-alone", str(junk), "--trunk", str(other), "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "junk.pt" in result.output and len(result.output.strip().splitlines()) == 1


def test_mirror_features_draw_the_cached_views_again_and_mirror_them():
    """`mer-train mirror-folds` scores a fold's own evaluation clips as a mirrored model sees them:
    for the rows asked, the trunk's features of the mirror image of exactly the views `extract`
    cached (the same augmentations drawn again), and nothing for the other rows."""
    import cv2
    import torch

    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.face_data import FaceSet
    from mer.train.face_features import _views, extract, mirror_features

    trunk = load_checkpoint(bundled_checkpoint("ia"))[0].visual_model.eval()  # trained: it reads faces apart
    face = cv2.resize(read_face(), (112, 112), interpolation=cv2.INTER_AREA)
    images = np.stack([np.roll(face, 6 * k, axis=1) for k in range(5)])
    faces = FaceSet(images, np.zeros((5, 8), np.float32), np.zeros(5, np.int64), np.array(["t"] * 5))
    cached = extract(trunk, faces, 112, batch=2)
    rows = np.array([1, 4])
    mirror = mirror_features(trunk, faces, 112, rows, batch=2)
    with torch.no_grad():
        drawn = {(s + i, v): xv[i] for s, v, xv in _views(faces, 112, 4, 2, 0, video=False) for i in range(len(xv))}
        for j, r in enumerate(rows):
            for v in range(4):
                view = drawn[r, v][None]
                np.testing.assert_allclose(cached[r, v], trunk.forward_features(view)[0].numpy(), atol=2e-2)
                np.testing.assert_allclose(mirror[j, v], trunk.forward_features(view.flip(-1))[0].numpy(), atol=2e-2)
    assert np.abs(mirror.astype(np.float32) - cached[rows].astype(np.float32)).max() > 0.1  # a mirror, not a copy


def test_eval_faces_mirror_reads_a_face_and_its_mirror_alike_and_a_headless_trunk_is_refused(tmp_path):
    """`eval-faces --trunk --mirror` averages each face's logits with its mirror image's, so a face
    and its mirror score the same; a trunk saved out of a fusion has no classifier head, and the
    command says so in one line before it loads any data."""
    import cv2
    import torch
    from click.testing import CliRunner

    from mer.train import cli
    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.pretrain_faces import FaceClassifier, face_logits

    torch.manual_seed(0)
    model = FaceClassifier()
    model.trunk = load_checkpoint(bundled_checkpoint("ia"))[0].visual_model  # trained: it reads faces apart
    model.eval()
    face = np.roll(cv2.resize(read_face(), (112, 112), interpolation=cv2.INTER_AREA), 15, axis=1)  # off-centre
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        plain, flipped = face_logits(model, x), face_logits(model, x.flip(-1))
        both, both_flipped = face_logits(model, x, mirror=True), face_logits(model, x.flip(-1), mirror=True)
    assert (plain - flipped).abs().max() > 1e-2  # the trunk tells a face from its mirror image
    torch.testing.assert_close(both, both_flipped, atol=1e-5, rtol=1e-5)
    assert both[0, 1] < -1e8  # calm is never a face target

    torch.save({"state_dict": model.trunk.state_dict(), "size": 112}, tmp_path / "headless.pt")
    result = CliRunner().invoke(cli.main, ["eval-faces", "--trunk", str(tmp_path / "headless.pt"), "--mirror"],
                                env={"MER_SHARED": str(tmp_path / "none")})
    assert result.exit_code == 1 and "no classifier head" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")  # a file that is not one: a line, not a traceback
    result = CliRunner().invoke(cli.main, ["eval-faces", "--trunk", str(tmp_path / "junk.pt")],
                                env={"MER_SHARED": str(tmp_path / "none")})
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'junk.pt'}: not a torch checkpoint (UnpicklingError)"]
    # A trunk without its temporal head (as taken out of a fusion) is scored; another network is not.
    from mer.train.fusion import trunk_only

    fc = model.fc.state_dict()
    torch.save({"state_dict": trunk_only(model.trunk.state_dict()), "fc": fc, "size": 112}, tmp_path / "bare.pt")
    torch.save({"state_dict": {"conv1.0.weight": torch.zeros(1)}, "fc": fc, "size": 112}, tmp_path / "other.pt")
    from mer.train.cli import _face_classifier

    bare = _face_classifier(tmp_path / "bare.pt", torch.load(tmp_path / "bare.pt", weights_only=False)).eval()
    with torch.no_grad():
        torch.testing.assert_close(face_logits(bare, x), plain)
    result = CliRunner().invoke(cli.main, ["eval-faces", "--trunk", str(tmp_path / "other.pt")],
                                env={"MER_SHARED": str(tmp_path / "none")})
    assert result.exit_code == 1 and "not a face trunk of this architecture" in result.output
