"""Pretrain the EfficientFace trunk on still faces: FER+ (train split) + TFEID (train performers).

Selection is on the FER+ *valid* split only; the FER+ test split and the TFEID test performers
are evaluated once per epoch for the log but never used to choose anything.

    mer-train faces            # = python -m mer.train.pretrain_faces --out runs/faces --epochs 10 --size 112
"""
from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment, degrade, resize, to_float_nchw
from .efficientface import FEATURE_DIM, EfficientFaceTemporal
from .face_data import FaceSet

TFEID_TEST_PERFORMERS = ("24", "25", "26", "27", "28", "29")  # performer-disjoint hold-out


class FaceClassifier(nn.Module):
    """Trunk + linear head over mer's 8 labels (calm is never a target)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = EfficientFaceTemporal()
        self.fc = nn.Linear(FEATURE_DIM, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk.forward_features(x))


def _to_rgb112(images: np.ndarray) -> np.ndarray:
    import cv2

    if images.ndim == 3:  # grey FER+ 48x48
        return np.stack([np.repeat(cv2.resize(im, (112, 112), interpolation=cv2.INTER_LINEAR)[:, :, None], 3, 2)
                         for im in images])
    return images


def face_logits(model: nn.Module, x: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """The classifier's logits for face batch `x`, calm masked (never a face target). With `mirror`,
    averaged with the mirror image's: the trunk-level counterpart of a mirrored fusion, which shows
    a still's temporal head the features of the face and of its mirror (MerModel.still_frame_features)."""
    logits = model(x)
    if mirror:
        logits = (logits + model(x.flip(-1))) / 2
    logits[:, 1] = -1e9
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, faces: FaceSet, size: int, batch: int = 256, mirror: bool = False,
             detail: bool = False) -> dict:
    """Accuracy over `faces`; with `detail`, also UAR and the confusion matrix (metrics.summarise)."""
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for i in range(0, len(faces.labels), batch):
        x = resize(to_float_nchw(torch.from_numpy(faces.images[i:i + batch]).to(device)), size)
        preds.append(face_logits(model, x, mirror).argmax(1).cpu().numpy())
    pred = np.concatenate(preds)
    if detail:
        from .metrics import summarise

        return summarise(faces.labels, pred)
    return {"accuracy": float((pred == faces.labels).mean()), "n": int(len(pred))}


def train(out: Path, epochs: int = 10, size: int = 112, batch: int = 96, lr: float = 3e-3, threads: int = 0,
          seed: int = 1, init: Path | None = None, video_aug: float = 0.0, tfeid_repeat: int = 1, ema: float = 0.0,
          mixup: float = 0.0, pack: Path | None = None, device: str = "cpu", budget_s: float = 0.0) -> None:
    """Train (or fine-tune, `init`) the trunk; the options are `mer-train faces`'s (train/cli.py)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    fer, tfeid = _faces(pack)
    out.mkdir(parents=True, exist_ok=True)  # once there is something to train on
    tfeid_test = np.isin(tfeid.groups, TFEID_TEST_PERFORMERS)
    train = [fer.subset(fer.groups == "train")] + [tfeid.subset(~tfeid_test)] * tfeid_repeat
    images = np.concatenate([t.images for t in train])
    targets = np.concatenate([t.targets for t in train])
    valid, test = fer.subset(fer.groups == "valid"), fer.subset(fer.groups == "test")
    tfeid_held = tfeid.subset(tfeid_test)
    # Faces stay uint8 where the model is (1.3 GB for FER+ at 112 px): a batch is cut out there.
    images_t, targets_t = torch.from_numpy(images).to(dev), torch.from_numpy(targets).to(dev)

    model = FaceClassifier()
    if init is not None:
        start = torch.load(init, map_location="cpu", weights_only=False)
        model.trunk.load_state_dict(start["state_dict"], strict=False)
        if "fc" in start:  # a trunk that kept its classifier: a new random head would first undo it
            model.fc.load_state_dict(start["fc"])
    model.to(dev)
    averaged = _ema_model(model, ema) if ema else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(images) // batch
    # On the clock (budget_s), the one-cycle shape follows the time (_one_cycle) and the epoch
    # count is whatever the time allows; otherwise the scheduler steps it over the epochs asked.
    sched = None if budget_s else torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    start_epoch, best = 0, -1.0
    ckpt_path = out / "last.pt"
    if ckpt_path.exists() and sched is not None:  # resume
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
        if averaged is not None and "ema" in ck:
            averaged.load_state_dict(ck["ema"])
        start_epoch, best = ck["epoch"] + 1, ck["best"]
        print(f"resumed from epoch {ck['epoch']}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    # Augmentation draws where the batch is; on the CPU that is `gen` itself (runs as before).
    aug_gen = gen if dev.type == "cpu" else torch.Generator(dev)
    log = open(out / "log.jsonl", "a")
    started = time.time()
    for epoch in itertools.count(start_epoch) if budget_s else range(start_epoch, epochs):
        gen.manual_seed(seed * 1000 + epoch)
        if aug_gen is not gen:
            aug_gen.manual_seed(seed * 1000 + epoch)
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        # The loss is summed where the model is and read every 50 steps: a read is a wait for a GPU.
        t0, seen, loss_sum = time.time(), 0, torch.zeros((), device=dev)
        for step in range(steps_per_epoch):
            if budget_s:
                done = (time.time() - started) / budget_s
                if done >= 1:
                    break
                _set_lr(opt, _one_cycle(done, lr))
            idx = torch.from_numpy(np.sort(order[step * batch:(step + 1) * batch])).to(dev)
            x = augment(to_float_nchw(images_t[idx]), size, aug_gen)
            if video_aug > 0:
                x = degrade(x, aug_gen, video_aug)
            y = targets_t[idx]
            if mixup > 0:
                x, y = _mix(x, y, mixup, aug_gen)
            loss = -(F.log_softmax(model(x), 1) * y).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            seen += len(idx); loss_sum += loss.detach() * len(idx)
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{steps_per_epoch} loss {loss_sum.item() / seen:.4f} "
                      f"{seen / (time.time() - t0):.1f} img/s", flush=True)
        if seen == 0:
            break
        row = {"epoch": epoch, "loss": loss_sum.item() / seen, "seconds": time.time() - t0, "steps": seen // batch,
               **_scores(model, valid, test, tfeid_held, size)}
        candidates = [(model, row)]
        if averaged is not None:
            row["ema"] = _scores(averaged.module, valid, test, tfeid_held, size)
            candidates.append((averaged.module, row["ema"]))
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n"); log.flush()
        for weights, scores in candidates:
            if scores["ferplus_valid"]["accuracy"] > best:
                best = scores["ferplus_valid"]["accuracy"]
                # The recipe travels with the weights: `mer-train ship` names a video fine-tune in the
                # model's trained-on line from `video_aug`.
                torch.save({"state_dict": weights.trunk.state_dict(), "fc": weights.fc.state_dict(),
                            "size": size, "epoch": epoch, "metrics": row, "video_aug": video_aug,
                            "init": str(init) if init else None, "tfeid_repeat": tfeid_repeat,
                            "averaged": weights is not model, "mixup": mixup, "seed": seed, "lr": lr,
                            "budget_s": budget_s}, out / "best_trunk.pt")
        if budget_s:  # a clock-driven run does not resume: no optimiser state to keep
            if time.time() - started >= budget_s:
                break
            continue
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "best": best, **({"ema": averaged.state_dict()} if averaged is not None else {})},
                   ckpt_path)


def _faces(pack: Path | None) -> tuple[FaceSet, FaceSet]:
    """FER+ (grey, upscaled to 112 px RGB) and TFEID (runtime-cropped), from ../shared or a pack."""
    from .face_pack import read, shared_faces

    try:
        fer, tfeid = read(pack) if pack is not None else shared_faces()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return FaceSet(_to_rgb112(fer.images), fer.targets, fer.labels, fer.groups), tfeid


def _one_cycle(done: float, lr: float, warm: float = 0.15) -> float:
    """OneCycleLR's cosine shape (start lr/25, peak lr at `warm`, end lr/25e4) at fraction `done`."""
    start, end = lr / 25, lr / 25e4
    if done < warm:
        return start + (lr - start) * (1 - math.cos(math.pi * done / warm)) / 2
    return end + (lr - end) * (1 + math.cos(math.pi * (done - warm) / (1 - warm))) / 2


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _mix(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: each face blended with another of the batch, the targets by the same weight."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator, device=generator.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def _ema_model(model: nn.Module, decay: float) -> nn.Module:
    """A moving average of `model`'s weights and batch-norm statistics (`use_buffers`: the average
    is scored as it stands, without another pass over the data to re-estimate its statistics)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _scores(model: nn.Module, valid: FaceSet, test: FaceSet, tfeid_held: FaceSet, size: int) -> dict:
    # A pack may leave FER+ test behind (scored where the data is, by `mer-train eval-faces`).
    return {"ferplus_valid": evaluate(model, valid, size),
            "ferplus_test": evaluate(model, test, size) if len(test.labels) else None,
            "tfeid_test_performers": evaluate(model, tfeid_held, size)}


if __name__ == "__main__":  # the same command as `mer-train faces`
    from .cli import faces

    faces()
