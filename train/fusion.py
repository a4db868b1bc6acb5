"""The three audiovisual fusions of Chumachenko et al. (ICPR 2022) behind the ONNX I/O contract.

`MerModel.forward(faces, mfcc)` takes what the runtime produces: faces uint8 (B, 15, 224, 224, 3)
RGB and mfcc float32 (B, n_mfcc, T). Scaling to [0, 1], the NHWC -> NCHW move and the optional
downscale to a smaller internal face resolution all happen inside the graph, so the runtime
ships a quarter of the bytes to the device and never needs torch.
"""
from __future__ import annotations

import torch
from torch import nn

from mer.runtime.contract import CONDITIONS, FUSIONS

from .attention import Attention, AttentionBlock
from .audio_cnn import AudioCNN
from .efficientface import FEATURE_DIM, EfficientFaceTemporal

E_DIM = 128        # stage-2 width of both branches
VIDEO_STAGE1 = 64  # stage-1 width of the visual branch
AUDIO_STAGE1 = 128
CALIBRATION = ("temperature", "class_bias")  # buffers train/calibrate.py fits, not trained weights
# The per-frame face trunk inside EfficientFaceTemporal (the rest, conv1d_*, is the temporal head).
TRUNK_MODULES = ("conv1", "maxpool", "stage2", "stage3", "stage4", "local", "modulator", "conv5")


class MerModel(nn.Module):
    def __init__(self, fusion: str = "ia", n_mfcc: int = 10, num_classes: int = 8,
                 num_frames: int = 15, image_size: int = 224, face_size: int = 224, num_heads: int = 1,
                 audio_norm: str = "none", audio_width: int = 1, audio_dilation: int = 1, members: int = 1,
                 mirror_faces: bool = False, face_classifier: bool = False):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if image_size % face_size or face_size % 16:
            # The local branch tiles four quadrants of the 1/4-size map back to the stage-2 size.
            raise ValueError(f"face_size {face_size} must divide image_size {image_size} and be a multiple of 16")
        self._config = {"fusion": fusion, "n_mfcc": n_mfcc, "num_classes": num_classes, "num_frames": num_frames,
                        "image_size": image_size, "face_size": face_size, "num_heads": num_heads,
                        "audio_norm": audio_norm, "audio_width": audio_width, "audio_dilation": audio_dilation}
        if members != 1:  # absent from a single model's config, so its exports and checkpoints read as before
            self._config["members"] = members
        if mirror_faces:  # likewise absent when off
            self._config["mirror_faces"] = True
        if face_classifier:  # likewise
            self._config["face_classifier"] = True
        self.mirror_faces = mirror_faces
        self.fusion = fusion
        self.num_frames = num_frames
        self.image_size = image_size
        self.face_size = face_size
        self.register_buffer("_face_kernel", _face_kernel(image_size // face_size), persistent=False)
        self.register_buffer("_mirrored_frames", torch.arange(num_frames) % 2 == 1, persistent=False)
        self.audio_model = AudioCNN(n_mfcc, num_classes, audio_norm, audio_width, audio_dilation)
        self.visual_model = EfficientFaceTemporal(num_classes, num_frames)
        if fusion == "lt":
            self.av = AttentionBlock(E_DIM, E_DIM, E_DIM, num_heads)
            self.va = AttentionBlock(E_DIM, E_DIM, E_DIM, num_heads)
        elif fusion == "it":
            self.av1 = AttentionBlock(VIDEO_STAGE1, AUDIO_STAGE1, AUDIO_STAGE1, num_heads)
            self.va1 = AttentionBlock(AUDIO_STAGE1, VIDEO_STAGE1, VIDEO_STAGE1, num_heads)
        else:
            self.av1 = Attention(VIDEO_STAGE1, AUDIO_STAGE1, AUDIO_STAGE1, num_heads)
            self.va1 = Attention(AUDIO_STAGE1, VIDEO_STAGE1, VIDEO_STAGE1, num_heads)
        self.classifier_1 = nn.Sequential(nn.Linear(2 * E_DIM, num_classes))
        # An ensemble (members > 1): more fusion heads, each trained alone (another seed or recipe)
        # on the same frozen face trunk and joined by `combine`. The trunk is shared, not copied
        # (torch.save stores a shared tensor once), so it runs once; the heads' logits are averaged,
        # then calibrated once (this model's buffers; a head's own stay at 1 and 0, unused).
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        single = {k: v for k, v in self._config.items() if k not in ("members", "mirror_faces", "face_classifier")}
        self.heads = nn.ModuleList(MerModel(**single) for _ in range(members - 1))
        for head in self.heads:
            for name in TRUNK_MODULES:
                setattr(head.visual_model, name, getattr(self.visual_model, name))
        # Calibration (train/calibrate.py), one per modality condition the runtime can feed (rows in
        # contract.CONDITIONS order): logits / temperature + class_bias; 1 and 0 = uncalibrated.
        # The temperatures are fitted (train/calibrate.py); the bias is a slot kept at 0 (a fitted
        # one learnt the calibration set's label mix, not the faces: see calibrate.py).
        self.register_buffer("temperature", torch.ones(len(CONDITIONS)))
        self.register_buffer("class_bias", torch.zeros(len(CONDITIONS), num_classes))
        # The face alone (a face and no speech) is also read by a linear classifier over the
        # trunk's features averaged over the clip (`mer-train face-alone` fits it on the trunk's
        # own training faces). The fusion head learnt the face-alone case only through modality
        # dropout, from 15 views of one still; the classifier reads each frame as the trunk was
        # trained to, and held-out faces read better with it (MODEL_CARD.md).
        self.face_classifier = nn.Linear(FEATURE_DIM, num_classes) if face_classifier else None
        if face_classifier:
            # Its share of the face-alone answer (log-probabilities mixed with the fusion head's):
            # the head, trained on class-balanced draws, finds FER+'s rare fear and disgust more
            # often; `mer-train face-alone` chooses the share on FER+ valid.
            self.register_buffer("face_classifier_share", torch.ones(()))

    def config(self) -> dict:
        """Constructor arguments, stored in checkpoints so a model can be rebuilt from one."""
        return dict(self._config)

    def prepare_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) -> float (B * T, 3, face_size, face_size) in [0, 1].

        One strided convolution does the downscale (a mean over factor x factor blocks), the NHWC
        -> NCHW layout change and the 1/255 scaling: each NHWC row is read as one channel of width
        W * 3. In ONNX Runtime this is ~1.5 ms faster than the ReduceMean + Transpose it replaced.
        """
        b, t, h, w, c = faces.shape
        f = self.image_size // self.face_size
        x = faces.to(torch.float32).reshape(b * t, 1, h, w * c)
        return nn.functional.conv2d(x, self._face_kernel, stride=(f, f * c))

    def forward(self, faces: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        condition = self.condition(faces, mfcc)
        return self.calibrated(self.raw_logits(faces, mfcc, condition), condition)

    def raw_logits(self, faces: torch.Tensor, mfcc: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The logits before calibration (what calibration is fitted on)."""
        if condition is None:
            condition = self.condition(faces, mfcc)
        face_alone = condition == CONDITIONS.index("video_only")
        return self.forward_features(self.frame_features(self.prepare_faces(faces)), mfcc, face_alone)

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features (B * T, 1024) of prepared face frames (B * T, 3, S, S).

        With `mirror_faces`, every other frame of a clip (t = 1, 3, ...) is read as its mirror image
        (a test-time flip for the same trunk work): an expression is symmetric, a face's lighting,
        pose and crop are not, and the temporal head, which averages over the clip, hears both.
        A fold's logits (`mer-train fusion`) are without it; `mer-train mirror-folds` scores them with it.
        Measured on held-out faces in MODEL_CARD.md. Training (cached features) never sees it, so it
        is set on a finished model (`mer-train calibrate --mirror-faces`).
        """
        if self.mirror_faces:
            clips = x.unflatten(0, (-1, self.num_frames))
            x = torch.where(self._mirrored_frames.view(1, -1, 1, 1, 1), clips.flip(-1), clips).flatten(0, 1)
        return self.visual_model.forward_features(x)

    def still_frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """What `frame_features` gives for each still (B, 3, S, S) shown for all T frames, (B * T, 1024),
        at one trunk pass per still (two with `mirror_faces`) instead of T."""
        feats = self.visual_model.forward_features(x)[:, None].expand(-1, self.num_frames, -1)
        if self.mirror_faces:
            mirrored = self.visual_model.forward_features(x.flip(-1))[:, None]
            feats = torch.where(self._mirrored_frames.view(1, -1, 1), mirrored, feats)
        return feats.reshape(-1, feats.shape[-1])

    def calibrated(self, logits: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Logits of samples in modality `condition` (B,) -> calibrated logits (train/calibrate.py)."""
        return logits / self.temperature[condition][:, None] + self.class_bias[condition]

    @staticmethod
    def condition(faces: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        """(B,) index into contract.CONDITIONS of each sample, read off the inputs the way the
        runtime marks an absent modality: all-zero faces (no face) or an all-zero MFCC (no audio)."""
        no_face = faces.reshape(faces.shape[0], -1).amax(1) == 0
        no_audio = mfcc.reshape(mfcc.shape[0], -1).abs().amax(1) == 0
        return torch.where(no_face, 1, torch.where(no_audio, 2, 0))

    def forward_features(self, frame_feats: torch.Tensor, mfcc: torch.Tensor,
                         face_alone: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from per-frame trunk features (B * T, 1024) and MFCC (B, n_mfcc, T_a); an
        ensemble's are the mean of its heads'. `face_alone` (B,) bool marks the samples given no
        speech: with a face classifier, theirs mix its log-probabilities with the heads'.

        Training with a frozen trunk enters here with cached features.
        """
        logits = self._head_logits(frame_feats, mfcc)
        for head in self.heads:
            logits = logits + head._head_logits(frame_feats, mfcc)
        logits = logits / (1 + len(self.heads))
        if self.face_classifier is None or face_alone is None:
            return logits
        share = self.face_classifier_share
        mixed = (share * self.face_alone_logits(frame_feats).log_softmax(-1)
                 + (1 - share) * logits.log_softmax(-1))
        return torch.where(face_alone[:, None], mixed, logits)

    def face_alone_logits(self, frame_feats: torch.Tensor) -> torch.Tensor:
        """The face classifier's logits (B, classes) of per-frame features (B * T, 1024): the
        classifier is linear, so reading the clip's mean feature is the mean of its frames' logits."""
        return self.face_classifier(frame_feats.unflatten(0, (-1, self.num_frames)).mean(1))

    def _head_logits(self, frame_feats: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        audio = self.audio_model.forward_stage1(mfcc)             # (B, 128, Ta)
        video = self.visual_model.forward_stage1(frame_feats)     # (B, 64, 15)
        if self.fusion == "lt":
            audio = self.audio_model.forward_stage2(audio).transpose(1, 2)
            video = self.visual_model.forward_stage2(video).transpose(1, 2)
            pooled_a = self.av(video, audio).mean(1)
            pooled_v = self.va(audio, video).mean(1)
        else:
            a_tok, v_tok = audio.transpose(1, 2), video.transpose(1, 2)
            if self.fusion == "it":
                audio = audio + self.av1(v_tok, a_tok).transpose(1, 2)
                video = video + self.va1(a_tok, v_tok).transpose(1, 2)
            else:
                # Only the attention maps are used: summed over the queries they give one
                # weight per time step of the *other* modality.
                _, map_av = self.av1(v_tok, a_tok)   # (B, h, Ta, 15)
                _, map_va = self.va1(a_tok, v_tok)   # (B, h, 15, Ta)
                video = video * map_av.mean(1).sum(1, keepdim=True)
                audio = audio * map_va.mean(1).sum(1, keepdim=True)
            pooled_a = self.audio_model.forward_stage2(audio).mean(-1)
            pooled_v = self.visual_model.forward_stage2(video).mean(-1)
        return self.classifier_1(torch.cat((pooled_a, pooled_v), dim=-1))


def trunk_only(visual_state: dict) -> dict:
    """The per-frame face trunk's tensors of an EfficientFaceTemporal state dict (not its temporal head)."""
    return {k: v for k, v in visual_state.items() if k.split(".")[0] in TRUNK_MODULES}


def build_model(config: dict) -> MerModel:
    return MerModel(**config)


def combine(models: list[MerModel]) -> MerModel:
    """One ensemble model of single fusion models trained alone on the same frozen face trunk.

    Uncalibrated (calibration is fitted afterwards on the members' averaged fold logits)."""
    first = models[0].config()
    if any(m.heads for m in models) or any(m.config() != first for m in models):
        raise ValueError("members must be single models of one configuration")
    out = MerModel(**first, members=len(models))
    trunk = {k: v for k, v in models[0].state_dict().items()
             if k.startswith("visual_model.") and k.split(".")[1] in TRUNK_MODULES}
    for i, m in enumerate(models[1:], 1):
        for k, v in m.state_dict().items():
            if k in trunk and not torch.equal(v, trunk[k]):
                raise ValueError(f"member {i} has another face trunk ({k} differs): heads can share only one trunk")
    state = {}
    for i, m in enumerate(models):
        for k, v in m.state_dict().items():
            if k in CALIBRATION:
                continue
            state[k if i == 0 else f"heads.{i - 1}.{k}"] = v
    missing, unexpected = out.load_state_dict(state, strict=False)
    assert not unexpected and all(k.rsplit(".", 1)[-1] in CALIBRATION for k in missing), (missing, unexpected)
    return out


def _face_kernel(factor: int, channels: int = 3) -> torch.Tensor:
    """(channels, 1, factor, factor * channels): output channel k averages the factor x factor
    pixels of colour k in a block of interleaved NHWC values, and scales to [0, 1]."""
    kernel = torch.zeros(channels, 1, factor, factor * channels)
    for k in range(channels):
        kernel[k, 0, :, k::channels] = 1.0 / (factor * factor * 255.0)
    return kernel
