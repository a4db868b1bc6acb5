"""The paper's end-to-end recipe on RAVDESS audiovisual takes (for users with the videos and a GPU).

Faces and audio are preprocessed once with the runtime's own decoder, face cropper and MFCC.
Defaults are the paper's: SGD lr 0.04, momentum 0.9, dampening 0.9, weight decay 1e-3, x0.1 at
epochs 40/55/65/70, 100 epochs, batch 8, soft-hard modality dropout (each batch x4), random flip
and +-10 degree rotation per clip. Best epoch on the validation actors; test scored there.
Several GPUs: `torchrun --nproc-per-node N -m mer.train.cli paper ...` (DistributedDataParallel).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mer.runtime.engine import clip_inputs
from mer.runtime.faces import FaceCropper
from mer.runtime.spec import FeatureSpec

from .efficientface import load_reference_checkpoint
from .fusion import MerModel
from .metrics import summarise
from .ravdess import Fold, Take


@dataclasses.dataclass
class PaperRecipe:
    fusion: str = "ia"
    epochs: int = 100
    batch: int = 8
    lr: float = 0.04
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 1e-3
    milestones: tuple[int, ...] = (40, 55, 65, 70)
    face_size: int = 224
    audio_norm: str = "none"
    seed: int = 1


@dataclasses.dataclass
class AVCache:
    faces: np.ndarray     # uint8 memmap (N, 15, 224, 224, 3)
    mfcc: np.ndarray      # float32 (N, n_mfcc, T)
    labels: np.ndarray
    actors: np.ndarray

    def select(self, actors: tuple[int, ...]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.actors, actors))


def build_av_cache(takes: list[Take], spec: FeatureSpec, folder: Path) -> AVCache:
    """Faces (runtime cropper) and MFCC (runtime front end, from the audio twin) of every AV take."""
    takes = [t for t in takes if t.video is not None]
    if not takes:
        raise ValueError("no audiovisual takes (01-*/02-* videos) found: the paper recipe needs RAVDESS video")
    folder.mkdir(parents=True, exist_ok=True)
    faces_path, meta_path = folder / "faces.u8", folder / "meta.npz"
    if meta_path.exists():
        meta = np.load(meta_path)
        faces = np.memmap(faces_path, np.uint8, "r", shape=(len(meta["labels"]), *spec.faces_shape))
        return AVCache(faces, meta["mfcc"], meta["labels"], meta["actors"])
    faces = np.memmap(faces_path, np.uint8, "w+", shape=(len(takes), *spec.faces_shape))
    feats = np.zeros((len(takes), *spec.mfcc_shape), np.float32)
    cropper = FaceCropper(spec)
    for i, take in enumerate(tqdm(takes, desc="preprocessing clips", unit="clip")):
        # The runtime's own clip -> inputs path; speech from the audio-only twin when there is one.
        faces[i], feats[i] = clip_inputs(take.video, spec, lambda: cropper)
        if take.audio is not None:
            feats[i] = clip_inputs(take.audio, spec, lambda: cropper)[1]
    cropper.close()
    faces.flush()
    np.savez(meta_path, mfcc=feats, labels=np.array([t.emotion for t in takes]), actors=np.array([t.actor for t in takes]))
    return AVCache(np.memmap(faces_path, np.uint8, "r", shape=faces.shape), feats,
                   np.array([t.emotion for t in takes]), np.array([t.actor for t in takes]))


def _augment_clips(faces: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per clip (same for its 15 frames): random horizontal flip and rotation in [-10, 10] degrees."""
    b, t, h, w, c = faces.shape
    x = faces.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w).float()
    angle = (torch.rand(b, generator=gen) * 20 - 10) * math.pi / 180
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) * flip, -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) * flip, torch.cos(angle)
    grid = F.affine_grid(theta, [b, t * c, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)


def soft_hard(faces: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor, gen: torch.Generator):
    """The paper's soft-hard modality dropout: originals; (audio*c, video*(1-c)); (0, video); (audio, 0)."""
    b = len(labels)
    c = (torch.randint(0, 100, (b,), generator=gen).float() / 100)
    faces4 = torch.cat([faces, faces * (1 - c).view(b, 1, 1, 1, 1), faces, torch.zeros_like(faces)])
    audio4 = torch.cat([audio, audio * c.view(b, 1, 1), torch.zeros_like(audio), audio])
    order = torch.randperm(4 * b, generator=gen)
    return faces4[order], audio4[order], labels.repeat(4)[order]


def _distributed() -> tuple[int, int]:
    """(rank, world) under torchrun, initialising the process group once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


@torch.no_grad()
def _evaluate(model, cache: AVCache, idx: np.ndarray, device) -> dict:
    model.eval()
    preds = []
    for s in range(0, len(idx), 8):
        part = idx[s:s + 8]
        faces = torch.from_numpy(np.ascontiguousarray(cache.faces[part])).to(device)
        preds.append(model(faces, torch.from_numpy(cache.mfcc[part]).to(device)).argmax(1).cpu().numpy())
    return summarise(cache.labels[idx], np.concatenate(preds))


def train_paper_fold(cache: AVCache, spec: FeatureSpec, fold: Fold, recipe: PaperRecipe, out: Path,
                     trunk_init: Path | None = None, log=print) -> dict:
    """Train one fold with checkpoint/resume (out/last.pt) and per-epoch metrics (out/epochs.csv)."""
    rank, world = _distributed()
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(recipe.seed)
    model = MerModel(recipe.fusion, n_mfcc=spec.n_mfcc, face_size=recipe.face_size, audio_norm=recipe.audio_norm)
    if trunk_init is not None:
        load_reference_checkpoint(model.visual_model, trunk_init)
    model.to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, dampening=recipe.dampening,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), 0.1)
    out.mkdir(parents=True, exist_ok=True)
    start, best = 0, {"epoch": -1, "val": {"accuracy": -1.0}}
    if (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        start, best = state["epoch"] + 1, state["best"]
        log(f"{fold.name}: resumed after epoch {state['epoch']}")
    tr, va, te = cache.select(fold.train), cache.select(fold.val), cache.select(fold.test)
    gen = torch.Generator()
    rows_path = out / "epochs.csv"
    for epoch in range(start, recipe.epochs):
        gen.manual_seed(recipe.seed * 1000 + epoch)
        order = tr[torch.randperm(len(tr), generator=gen).numpy()][rank::world]  # each rank its shard
        net.train()
        t0, losses = time.time(), []
        for s in range(0, len(order), recipe.batch):
            part = np.sort(order[s:s + recipe.batch])
            faces = _augment_clips(torch.from_numpy(np.ascontiguousarray(cache.faces[part])), gen)
            faces, audio, y = soft_hard(faces, torch.from_numpy(cache.mfcc[part]), torch.from_numpy(cache.labels[part]), gen)
            loss = F.cross_entropy(net(faces.to(device), audio.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        if rank != 0:
            continue
        val = _evaluate(model, cache, va, device)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": float(np.mean(losses)),
               "val_accuracy": val["accuracy"], "val_uar": val["uar"], "val_confusion": json.dumps(val["confusion"]),
               "seconds": round(time.time() - t0, 1)}
        with open(rows_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if fh.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
        log(json.dumps({"fold": fold.name, **{k: v for k, v in row.items() if k != "val_confusion"}}))
        if val["accuracy"] > best["val"]["accuracy"]:
            best = {"epoch": epoch, "val": val}
            torch.save({"state_dict": model.state_dict(), "config": model.config(), "epoch": epoch}, out / "best.pt")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "best": best}, out / "last.pt")
    if rank != 0:
        return {}
    model.load_state_dict(torch.load(out / "best.pt", map_location=device)["state_dict"])
    result = {"fold": fold.name, "test_actors": fold.test, "val_actors": fold.val, "best_epoch": best["epoch"],
              "val": best["val"], "test": _evaluate(model, cache, te, device), "recipe": dataclasses.asdict(recipe)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result
