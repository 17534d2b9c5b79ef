"""Image classification workloads: ResNet-50 on synthetic images or a class-per-folder tree."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from trainscale.workloads.data import DataConfig, ImageFolder, SyntheticImages, check_image_folder
from trainscale.workloads.base import Built, Workload
from trainscale.workloads.resnet import ResNet50


@dataclass
class ResNetConfig:
    width: float = 1.0  # channel multiplier; the [3, 4, 6, 3] bottleneck structure is kept
    resolution: int = 224  # input images are resolution x resolution
    num_classes: int = 1000  # real data: taken from the folder count when left at 0
    channels_last: bool = False  # model and inputs in NHWC memory format (applied by scaling/runtime/precision.py)


# MLPerf Training's ResNet-50 quality target: 75.9% top-1 on the ImageNet validation set.
RESNET50_TARGET = 0.759


class ResNet50Workload(Workload):
    name = "resnet50"
    summary = "ResNet-50 (torchvision's layout) on synthetic images or an image folder"
    config_cls = ResNetConfig
    spec_defaults: dict = {"eval": {"max_epochs": 90}}

    def default_target(self, data_kind: str) -> float | None:
        return RESNET50_TARGET if data_kind == "real" else None

    def validate_data(self, cfg: ResNetConfig, data: DataConfig) -> None:
        if data.kind == "real":
            root = Path(data.path)
            check_image_folder(root / "train" if (root / "train").is_dir() else root, "data.path")

    def validate_run(self, spec) -> None:
        if spec.is_tta and spec.data.kind == "real":
            root = Path(spec.data.path)
            if not (root / "val").is_dir():
                raise ValueError(f"a time-to-accuracy run needs a validation set: {root}/val/<class>/<image> "
                                 f"is missing (or use --target-accuracy none for a throughput run)")
            check_image_folder(root / "val", "the validation folder")

    def validate_model(self, cfg: ResNetConfig) -> None:
        if cfg.width <= 0:
            raise ValueError(f"model.width must be positive, got {cfg.width}")
        if cfg.resolution < 32:
            raise ValueError(f"model.resolution must be at least 32 (ResNet-50 downsamples 32x), got {cfg.resolution}")
        if cfg.num_classes < 0:
            raise ValueError(f"model.num_classes must be 0 (from the data) or more, got {cfg.num_classes}")

    def build(self, cfg: ResNetConfig, data: DataConfig, seed: int, min_train_samples: int) -> Built:
        eval_set = None
        if data.kind == "real":
            root = Path(data.path)
            train_dir = root / "train" if (root / "train").is_dir() else root
            train_set = ImageFolder(train_dir, cfg.resolution, train=True, seed=seed)
            val_dir = root / "val"
            if val_dir.is_dir():
                eval_set = ImageFolder(val_dir, cfg.resolution, train=False, classes=train_set.classes)
            classes = len(train_set.classes) if cfg.num_classes == 0 else cfg.num_classes
        else:
            classes = cfg.num_classes or 1000
            length = data.synthetic_size or min_train_samples
            train_set = SyntheticImages(length, cfg.resolution, classes, seed)
        model = ResNet50(num_classes=classes, width=cfg.width)
        return Built(model=model, loss_fn=nn.CrossEntropyLoss(), train_set=train_set, eval_set=eval_set,
                     sample_unit="images")
