"""The trainer's one typed config: a YAML preset plus `--set key=value` overrides.

Flat fields, like the runtime's `AnonymizerConfig`, so every value is one
override away and the checkpoint can store the config as plain data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
PRIVACY_LOSSES = ("true_class", "cosine", "both")
GENERATORS = ("resnet", "lowpass")
LANDMARK_SHAPES = ("person", "pose", "turn")  # what of the detected landmarks M uses (models/anonymizer.py)
M_TRAINED = ("all", "landmarks", "expression")  # which of M's weights its optimiser moves (train.trainable_m_parameters)
UPSAMPLING = ("transpose", "resize")


class TrainConfigError(ValueError):
    """A preset, file or override that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "edge"
    seed: int = 0  # the draws: initial weights, batches, augmentation, track moves
    split_seed: int = 0  # which people are held out (data/faces.py): another `seed` draws again on the same split
    out_dir: str = "runs/edge"
    device: str = "auto"  # auto: cuda when available, else cpu
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0: torch's default (tiny models run best on 1)

    # Faces with identities (ImageFolder layout: <root>/<identity>/<image>).
    faces_root: str = "../shared/data/lfw/images"
    dataset_name: str = "LFW DevTrain (deep-funneled)"
    cache_dir: str = ".cache/training"
    crop_size: int = 64
    box_enlarge: float = 1.3
    detect_threshold: float = 0.4
    min_images_per_identity: int = 4  # identities D learns to recognise
    holdout_identities: float = 0.15  # fraction of identities never trained on (privacy validation)
    val_images_per_identity: int = 1  # images per trained identity kept for D's validation accuracy
    max_identities: int = 0  # 0: all; small numbers make the tiny preset fast
    max_images_per_identity: int = 0  # 0: all; caps big identities (and the detector work)

    # Anonymizer M (training/models/anonymizer.py).
    m_generator: str = "resnet"  # resnet: the authors' generator; lowpass: paints a face over an m_input_size low-pass copy
    m_upsample: str = "transpose"  # resnet only: transpose (the authors') or resize (nearest resize + conv, no checkerboard)
    m_input_size: int = 8  # lowpass only: the side of the area-downsampled crop M sees (what of identity can reach it)
    m_grid_size: int = 0  # lowpass only: the side M's network starts at, the input resized to it; 0: m_input_size
    m_landmarks: bool = False  # lowpass only: M also takes the detector's 5 landmarks (pose and mouth shape; ONNX input "landmarks")
    m_landmark_step: float = 0.0  # with m_landmarks: M rounds each point to this grid (crop units, e.g. 0.0625) before using it
    m_landmark_shape: str = "person"  # with m_landmarks: person (the points as detected), pose (a template face placed by them: place, size, roll, yaw) or turn (the same at everyone's height and size)
    m_expression: int = 0  # lowpass only: M also reads this many numbers off the full-resolution crop (expression; models/anonymizer.py)
    m_train: str = "all"  # all of M's weights; landmarks: only the landmark heads; expression: only the expression encoder and patterns
    m_channels: int = 32
    export_detail_scale: float = 1.0  # lowpass only: the exported M paints this fraction of its residual (privacy/naturalness knob)
    m_blocks: int = 3

    # Realism discriminator R (PatchGAN, training/models/realism.py), trained only when lambda_realism > 0.
    r_channels: int = 32
    r_layers: int = 3
    lr_r: float = 2e-4

    # Face discriminator D (SphereFace-style ResNet + cosine-margin softmax).
    d_channels: list = field(default_factory=lambda: [16, 32, 64, 128])
    d_units: list = field(default_factory=lambda: [1, 1, 1, 1])
    d_input: list = field(default_factory=lambda: [64, 56])
    d_embedding: int = 128
    margin_scale: float = 30.0
    margin: float = 0.35

    # Optimisation.
    batch_size: int = 64
    lr_m: float = 2e-4
    lr_d: float = 1e-3
    pretrain_d_steps: int = 2000
    pretrain_a_steps: int = 0
    joint_steps: int = 3000
    d_modified_weight: float = 1.0  # weight of D's identity loss on modified faces in the joint stage
    privacy_loss: str = "both"
    lambda_privacy: float = 1.0
    track_views: int = 1  # >1: each face also seen in this many frames of a track (moved copies), for the term below
    lambda_track_privacy: float = 0.0  # D's embedding averaged over the track's frames must not find the person either
    lambda_l1: float = 2.0
    l1_target: str = "self"  # "other": toward another face of the batch; "lookalike": own low-pass copy + a stranger's detail
    lambda_det: float = 0.0  # weight of A's detection loss on frames with M(f) pasted (needs the action clips)
    lambda_face: float = 0.0  # weight of the detectability term: CenterFace must still find a face in M's output
    face_score_target: float = 0.8  # CenterFace score above which the detectability term is zero
    lambda_realism: float = 0.0  # weight of R's LSGAN loss on M's blended output (pix2pix realism)
    lambda_lowpass: float = 0.0  # L1 between lowpass_size x lowpass_size copies of output and input: colour, lighting, pose
    lowpass_size: int = 8
    lambda_ring: float = 0.0  # L1 of M's raw output where the blend mask fades: no seam
    lambda_l1_features: float = 0.0  # L1 to the L1 target again, in windows at the detector's eyes, nose and mouth corners (expression)
    lambda_expression_person: float = 0.0  # two photos of one person: their expression numbers' correlation over the batch, squared (who it is out of the numbers)
    lambda_expression_mean: float = 0.0  # the expression numbers' batch mean, squared: on average M paints as the M it grew from, only how a face differs shows
    lambda_landmarks: float = 0.0  # CenterFace's landmarks and box size on the output match the input's (pose, expression)
    landmark_faces: int = 0  # faces of each batch the landmark term looks at; 0: all (CenterFace is the costliest critic)
    init_anonymizer: str = ""  # an exported anonymizer ONNX whose weights start M (fine-tuning); "": random start
    init_realism: str = ""  # an earlier run's checkpoint (folder or last.pt) whose realism discriminator R starts this run's

    # Action detector A (training/models/action_detector.py, training/data/actions.py).
    jhmdb_root: str = "../shared/data/jhmdb"  # "" leaves JHMDB out
    ucf24_root: str = "../shared/data/ucf101_24"  # "" leaves UCF101-24 out
    action_holdout: float = 0.2  # last fraction of each clip's annotated frames, never trained on
    action_batch_size: int = 4
    lr_a: float = 2e-3
    augment: bool = True
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250

    def __post_init__(self):
        if self.privacy_loss not in PRIVACY_LOSSES:
            raise TrainConfigError(f"privacy_loss must be one of {', '.join(PRIVACY_LOSSES)}, not {self.privacy_loss!r}.")
        if len(self.d_channels) != len(self.d_units) or len(self.d_input) != 2:
            raise TrainConfigError("d_channels and d_units need one entry per stage and d_input is [height, width].")
        if self.crop_size % 4:
            raise TrainConfigError(f"crop_size must be a multiple of 4 (two stride-2 stages in M), not {self.crop_size}.")
        if self.m_generator not in GENERATORS or self.m_upsample not in UPSAMPLING:
            raise TrainConfigError(f"m_generator is one of {', '.join(GENERATORS)} and m_upsample one of {', '.join(UPSAMPLING)}.")
        for name in ("m_input_size", "lowpass_size"):
            size = getattr(self, name)
            if size < 4 or self.crop_size % size:
                raise TrainConfigError(f"{name} must be at least 4 and divide crop_size ({self.crop_size}), not {size}.")
        if self.m_grid_size and (self.m_grid_size % self.m_input_size or self.crop_size % self.m_grid_size):
            raise TrainConfigError(f"m_grid_size is 0 or a multiple of m_input_size ({self.m_input_size}) that divides crop_size, not {self.m_grid_size}.")
        if self.l1_target not in ("self", "other", "lookalike"):
            raise TrainConfigError(f"l1_target is self (the input face), other (another face of the batch) or lookalike "
                                   f"(a trained stranger's detail over the face's low-pass copy), not {self.l1_target!r}.")
        if not 0.0 <= self.m_landmark_step <= 0.5:
            raise TrainConfigError(f"m_landmark_step is a grid in crop units from 0 (none) to 0.5, not {self.m_landmark_step}.")
        if self.m_landmark_shape not in LANDMARK_SHAPES:
            raise TrainConfigError(f"m_landmark_shape is one of {', '.join(LANDMARK_SHAPES)}, not {self.m_landmark_shape!r}.")
        if self.m_train not in M_TRAINED or (self.m_train == "landmarks" and not self.m_landmarks) or (
                self.m_train == "expression" and not self.m_expression):
            raise TrainConfigError(f"m_train is all, landmarks (only the landmark heads; needs m_landmarks: true) or expression "
                                   f"(only the expression encoder; needs m_expression > 0), not {self.m_train!r}.")
        if not 0 <= self.m_expression <= 8 or (self.m_expression and self.m_generator != "lowpass"):
            raise TrainConfigError(f"m_expression is 0 (none) to 8 numbers, with the lowpass generator; not {self.m_expression}.")
        if max(self.lambda_expression_person, self.lambda_expression_mean) > 0 and (not self.m_expression or self.track_views > 1 or self.lambda_det > 0):
            raise TrainConfigError("lambda_expression_person and lambda_expression_mean need m_expression > 0 (the numbers they act on), "
                                   "and track_views 1 and lambda_det 0 (M runs once over the faces and their partners).")
        if self.m_landmarks and self.m_generator != "lowpass":
            raise TrainConfigError("m_landmarks needs the lowpass generator (m_generator: lowpass).")
        if self.l1_target == "lookalike" and self.m_generator != "lowpass":
            raise TrainConfigError("l1_target lookalike needs the lowpass generator (m_generator: lowpass): it keeps M's low-pass copy.")
        if not 0.0 < self.face_score_target < 1.0:
            raise TrainConfigError(f"face_score_target is a CenterFace score between 0 and 1, not {self.face_score_target}.")
        if self.track_views < 1:
            raise TrainConfigError(f"track_views is 1 (single faces) or more (views averaged over a track), not {self.track_views}.")
        if (self.track_views > 1) != (self.lambda_track_privacy > 0):
            raise TrainConfigError("track_views > 1 and lambda_track_privacy > 0 go together: the term averages D over the track's views.")
        if self.lambda_track_privacy > 0 and self.lambda_privacy <= 0:
            raise TrainConfigError("lambda_track_privacy needs lambda_privacy > 0 (the joint game against D).")
        if self.track_views > 1 and self.lambda_det > 0:
            raise TrainConfigError("track_views and lambda_det cannot be combined yet (M runs once over faces and action frames); set one of them.")
        if not 0.0 <= self.holdout_identities < 1.0:
            raise TrainConfigError("holdout_identities is a fraction from 0 to 1.")

    @classmethod
    def load(cls, preset_or_path: str, overrides: list[str] = ()) -> "TrainConfig":
        """A preset name (tiny, edge, paper) or a YAML path, then `key=value` overrides."""
        path = Path(preset_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{preset_or_path}.yaml"
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except OSError:
            presets = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")))
            raise TrainConfigError(f"no training config {preset_or_path!r}; use a preset ({presets}) or a YAML file.") from None
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise TrainConfigError(f"override {item!r} must look like key=value.")
            values[key.strip()] = yaml.safe_load(raw)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TrainConfigError(f"unknown training setting(s) {', '.join(unknown)}; see training/config.py.")
        for name, value in values.items():
            default = known[name].default if known[name].default is not dataclasses.MISSING else known[name].default_factory()
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                values[name] = float(value)
            elif type(value) is not type(default):
                raise TrainConfigError(f"{name} must be a {type(default).__name__}, not {value!r}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write every setting as YAML that `load` reads back to this config (a run's `config.yaml`)."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
