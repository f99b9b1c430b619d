"""Typed, frozen config sections.

Each dataclass is one INI section of ``train_eval_infer.config``; its fields are
the keys FlexUNet honours, with their defaults.  Field metadata ``doc`` feeds
the config reference (``flexunet config-doc``) and ``aliases`` lists other
spellings the original used (``alpah`` for ``alpha``).

The rest of the code reads only these objects, never raw dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


def _f(default, doc: str, aliases: tuple[str, ...] = (), choices: tuple | None = None):
    return field(default=default, metadata={"doc": doc, "aliases": aliases, "choices": choices})


@dataclass(frozen=True)
class ModelConfig:
    model: str = _f("TensorFlowFlexUNet", "Architecture name from the registry (`flexunet models`).")
    generator: bool = _f(False, "True turns on online augmentation driven by [augmentor].")
    image_width: int = _f(512, "Model input width in pixels.")
    image_height: int = _f(512, "Model input height in pixels.")
    image_channels: int = _f(3, "Input channels: 1 (grey) or 3 (RGB, or 2.5D slices z-1,z,z+1 for CT).",
                             choices=(1, 3))
    input_normalize: bool = _f(False, "Standardise each image to zero mean, unit variance after scaling to [0,1].")
    normalization: bool = _f(False, "BatchNorm after each convolution.")
    num_classes: int = _f(3, "Number of classes including background; must equal the classes in rgb_map.")
    base_filters: int = _f(16, "Filters at encoder level 0; doubles at each level.")
    base_kernels: tuple = _f((9, 9), "Kernel size at level 0; shrinks by 2 per level, never below 3.")
    num_layers: int = _f(8, "Encoder levels including the bridge.")
    dropout_rate: float = _f(0.04, "Dropout at level i is dropout_rate * i.")
    dilation: tuple = _f((1, 1), "Dilation at level 0; shrinks by 1 per level, never below 1.")
    activation: str = _f("relu", "Activation: relu, elu, gelu, silu, leaky_relu, mish.",
                         choices=("relu", "elu", "gelu", "silu", "swish", "leaky_relu", "mish"))
    optimizer: str = _f("Adam", "Adam or AdamW.", choices=("Adam", "AdamW"))
    learning_rate: float = _f(0.0001, "Initial learning rate.")
    weight_decay: float = _f(0.0, "Weight decay (AdamW).")
    clipvalue: Optional[float] = _f(None, "Clip each gradient value to [-clipvalue, clipvalue].")
    loss: str = _f("categorical_crossentropy",
                   "categorical_crossentropy, dice, dice_ce, dice_loss, bce_dice_loss, iou_loss, "
                   "jaccard_loss, focal, tversky.")
    metrics: tuple = _f(("dice_coef_multiclass",), "Original's Keras metric names. Training always reports "
                                                   "loss and dice_coef_multiclass; other names are accepted, not "
                                                   "used (a warning says so).")
    show_summary: bool = _f(False, "Print the model summary at start.")
    pretrained: Optional[str] = _f(None, "Path of a local state-dict file to initialise the model with.")


@dataclass(frozen=True)
class DatasetConfig:
    class_name: str = _f("ImageCategorizedMaskDataset",
                         "Dataset class: ImageCategorizedMaskDataset (2D slices) or VolumeSliceDataset "
                         "(slices straight from the [slice] cases, no PNG step).",
                         choices=("ImageCategorizedMaskDataset", "ImageMaskDataset", "VolumeSliceDataset"))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _f(100, "Maximum epochs.")
    batch_size: int = _f(2, "Batch size.")
    patience: int = _f(10, "EarlyStopping patience on val_loss (0 disables).")
    metrics: tuple = _f(("dice_coef_multiclass", "val_dice_coef_multiclass"),
                        "train_metrics.png always plots dice_coef_multiclass and val_dice_coef_multiclass; other "
                        "names are accepted, not used (a warning says so).")
    model_dir: str = _f("./models/", "Folder of best.pt (weights only) and last.ckpt (resumable).")
    eval_dir: str = _f("./eval/", "Folder of the per-epoch CSVs and plots.")
    images_dir: str = _f("./dataset/train/images/", "Training images.")
    masks_dir: str = _f("./dataset/train/masks/", "Training masks.")
    create_backup: bool = _f(False, "Copy an existing model_dir aside before training.")
    learning_rate_reducer: bool = _f(True, "ReduceLROnPlateau on val_loss (with lr_schedule = \"plateau\").")
    lr_schedule: str = _f("plateau", "plateau (the original's reducer, when learning_rate_reducer is True) or poly "
                                     "(nnU-Net: lr * (1 - progress)^0.9 per epoch; progress counts epochs, or "
                                     "time against max_time_minutes when that is further).")
    reducer_factor: float = _f(0.5, "ReduceLROnPlateau factor.")
    reducer_patience: int = _f(4, "ReduceLROnPlateau patience (honoured, unlike the original).")
    epoch_change_infer: bool = _f(False, "Infer a few images at the end of every epoch.")
    epoch_change_infer_dir: str = _f("./epoch_change_infer", "Where Epoch_{n}_{name}.png goes.")
    num_infer_images: int = _f(6, "How many images from [infer] images_dir are inferred each epoch.")
    save_weights_only: bool = _f(True, "The best checkpoint holds weights only (always true in FlexUNet).")
    accelerator: str = _f("auto", "Lightning accelerator: auto, cpu, gpu.")
    devices: object = _f("auto", "Lightning devices: auto, an int, or a list.")
    strategy: str = _f("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...")
    precision: str = _f("auto", "auto (bf16 where the CPU/GPU has it natively, else fp32), 32, bf16-mixed, 16-mixed.")
    seed: int = _f(42, "Seed for reproducible runs.")
    num_workers: int = _f(2, "DataLoader worker processes.")
    max_time_minutes: Optional[float] = _f(None, "Training time budget for the whole run (a --resume continues it): "
                                                 "stops at the epoch boundary that keeps within it.")
    max_time_stop: str = _f("epoch", "How max_time_minutes ends a run: epoch (stop at the last epoch boundary that "
                                     "keeps within the budget) or batch (train until the budget is spent and stop "
                                     "after the batch that crosses it; that cut epoch is validated like any other), "
                                     "so a run whose epochs are long still trains for all its minutes, e.g. to "
                                     "compare recipes under the same wall-clock budget.", choices=("epoch", "batch"))
    max_steps_per_epoch: Optional[int] = _f(None, "Cap the training batches per epoch.")
    channels_last: bool = _f(True, "Use channels_last memory format.")
    oversample_class: Optional[int] = _f(None, "Class id whose slices are drawn more often (nnU-Net-style "
                                               "foreground oversampling), e.g. 2 for tumour; None: plain shuffle.")
    oversample_fraction: float = _f(0.33, "Expected share of each epoch's training samples that contain "
                                          "oversample_class (only raises the natural share, never lowers it).")
    patch_size: Optional[tuple] = _f(None, "Train on random (h, w) crops of each slice (nnU-Net style); None: whole "
                                           "slices. Validation and inference always see whole images.")
    patch_foreground_fraction: float = _f(0.33, "Share of patches centred near a foreground pixel (of "
                                                "oversample_class when set and present).")
    synth_lesions: float = _f(0.0, "Probability that a training slice holding the organ gets synthetic hypodense "
                                   "lesions (tumour synthesis, data/lesions.py); 0: off.")
    synth_lesion_count: tuple = _f((1, 2), "Lesions per synthesised slice: (min, max).")
    synth_lesion_radius: tuple = _f((3.0, 12.0), "Lesion radius range in pixels of the model's input.")
    synth_lesion_contrast: tuple = _f((20.0, 60.0), "How much darker than the tissue, in HU ([slice] hu_window "
                                                    "converts it): (min, max).")
    synth_lesion_half_slices: tuple = _f((1.2, 4.0), "Lesion half-height in slices (2.5D: the neighbour channels "
                                                     "show smaller cross-sections).")
    synth_lesion_class: int = _f(2, "Class id the synthetic lesions get (tumour).")
    ema_decay: float = _f(0.0, "Exponential moving average of the weights (Lightning's EMAWeightAveraging), updated "
                               "after every optimiser step: validation, early stopping, the LR reducer and best.pt "
                               "see the average, and training ends with it; e.g. 0.99; 0: off.")
    context_flip: float = _f(0.0, "Probability that a training item's 2.5D context channels are swapped (z-1 and "
                                  "z+1: the slice above seen as the one below); needs 2.5D context; 0: off.")


@dataclass(frozen=True)
class SplitDirs:
    images_dir: Optional[str] = _f(None, "Images folder.")
    masks_dir: Optional[str] = _f(None, "Masks folder.")


@dataclass(frozen=True)
class InferConfig:
    images_dir: str = _f("./mini_test/images/", "Images to segment.")
    output_dir: str = _f("./mini_test_output/", "Palette PNG masks go here as <stem>.png.")
    overlay_dir: Optional[str] = _f(None, "Overlays go here (default: output_dir + '_overlay').")
    batch_size: int = _f(4, "Inference batch size.")
    device: str = _f("auto", "Where infer, evaluate and infer-volume run the model: auto (the GPU where torch sees "
                             "one, else the CPU), cpu, cuda, cuda:N.")
    merged_dir: Optional[str] = _f(None, "Alias of overlay_dir (original's name).")
    weights: tuple = _f((), "Checkpoints that infer, evaluate and infer-volume run, their softmax averaged (an "
                            "ensemble: best.pt and last.ckpt of one run, or several folds' best.pt); paths "
                            "relative to [train] model_dir unless absolute; empty: model_dir/best.pt. "
                            "--weights on the command line wins.")
    sharpening: bool = _f(False, "Accepted, not used: masks are written unsharpened (True gives a warning).")
    fill_holes: bool = _f(True, "infer-volume postprocessing: fill the organ's holes slice by slice (they become "
                                "liver); False keeps them (a vessel or gallbladder the liver surrounds).")
    min_tumour_mm3: float = _f(0.0, "infer-volume postprocessing: tumour components smaller than this (mm^3) "
                                    "become liver; 0: keep all.")
    tumour_liver_contact: float = _f(0.0, "infer-volume postprocessing: tumour components with less than this share "
                                          "of their in-plane surroundings labelled liver become background; 0: off.")
    tta_context_flip: bool = _f(False, "infer-volume: also segment each slice with its 2.5D context channels "
                                       "swapped and average the probabilities (test-time augmentation; twice "
                                       "the model time); needs 2.5D context.")
    tumour_grow: int = _f(0, "infer-volume postprocessing: each tumour found grows by up to this many voxel steps "
                             "into neighbours of its own intensity (image smoothed in 3-D), after the filters; 0: off.")
    tumour_grow_beyond: int = _f(2, "tumour_grow may reach this many voxels outside the organ's outline "
                                    "(a lesion at the surface the model cut off); 0: inside the organ only.")
    runtime: str = _f("eager", "How infer, evaluate and infer-volume run the model: eager (PyTorch), compile "
                               "(torch.compile; slow first batch), onnxruntime (the model exported to ONNX in "
                               "memory, or an .onnx file from `flexunet export` given as weights); see "
                               "docs/results.md for their speed.", choices=("eager", "compile", "onnxruntime"))


@dataclass(frozen=True)
class TiledInferConfig:
    enabled: bool = _f(False, "Use sliding-window (tiled) inference in `flexunet infer`.")
    overlapping: int = _f(64, "Overlap between tiles in pixels.")
    images_dir: Optional[str] = _f(None, "Images for tiled inference (default: [infer] images_dir).")
    output_dir: Optional[str] = _f(None, "Output folder for tiled inference (default: [infer] output_dir).")
    merged_dir: Optional[str] = _f(None, "Overlay folder for tiled inference.")
    bitwise_blending: bool = _f(True, "Accepted, not used: tiles are blended with a Gaussian window and the "
                                      "whole-image mask is not AND-ed in (True given in the file gives a "
                                      "warning).")


@dataclass(frozen=True)
class ImageConfig:
    color_order: str = _f("RGB", "Channel order of the input images: RGB or BGR.", choices=("RGB", "BGR"))


@dataclass(frozen=True)
class MaskConfig:
    mask_file_format: str = _f(".png", "Mask extension: .png, .jpg, .tif, .npz.")
    rgb_map: dict = _f(None, "Colour -> class id, e.g. {(0,0,0):0,(0,0,255):1,(255,0,0):2}.")
    color_tolerance: float = _f(60.0, "Max RGB distance from the nearest rgb_map colour; farther pixels are an error "
                                      "when they exceed color_outlier_fraction.")
    color_outlier_fraction: float = _f(0.01, "Fraction of pixels allowed beyond color_tolerance.")
    class_names: tuple = _f((), "Class names by id; default background, liver, tumour (3 classes) or class_<id>.")


@dataclass(frozen=True)
class SliceConfig:
    cases_dir: str = _f("./cases", "Canonical case folders (from `flexunet import` or `flexunet phantom`).")
    output_dir: str = _f("./dataset", "Where train/valid/test x images/masks are written.")
    hu_window: tuple = _f((-100, 250), "HU window mapped to 0..255.")
    context_slices: Optional[bool] = _f(None, "2.5D (z-1,z,z+1) channels; default: image_channels == 3.")
    planes: tuple = _f(("axial",), "Slicing planes: axial, coronal, sagittal, or a list of them. `slice` cuts every "
                                   "plane (2.5D context along its normal; PNGs named <case>_<plane>_<k> unless only "
                                   "axial), and `infer-volume` segments the volume in each plane and averages the "
                                   "probabilities in 3-D (tri-planar fusion).")
    foreground_only: bool = _f(True, "Train and valid patients: keep slices with foreground plus "
                                     "background_fraction of the others. Test patients keep every slice, so "
                                     "`evaluate` scores their empty slices too.")
    background_fraction: float = _f(0.1, "Fraction of background-only slices kept when foreground_only.")
    split_ratios: tuple = _f((0.7, 0.15, 0.15), "train, valid, test ratios by patient.")
    train_cases: tuple = _f((), "Explicit train case ids (overrides ratios when any list is given).")
    valid_cases: tuple = _f((), "Explicit valid case ids.")
    test_cases: tuple = _f((), "Explicit test case ids.")
    seed: int = _f(0, "Seed of the patient split and slice choice.")


@dataclass(frozen=True)
class AugmentorConfig:
    rotation: bool = _f(False, "Random rotation by one of `angles`.")
    angles: tuple = _f((90, 180, 270), "Rotation angles in degrees.")
    hflip: bool = _f(False, "Horizontal flip.")
    vflip: bool = _f(False, "Vertical flip.")
    shrinks: tuple = _f((), "Zoom-out factors (e.g. [0.6, 0.8]); empty disables.")
    shears: tuple = _f((), "Shear factors (e.g. [0.1]); empty disables.")
    deformation: bool = _f(False, "Elastic deformation ([deformation]).")
    distortion: bool = _f(False, "Smooth random distortion ([distortion]).")
    sharpening: bool = _f(False, "Unsharp masking ([sharpening]).")
    brightening: bool = _f(False, "Linear brightness/contrast ([brightening]).")
    barrdistortion: bool = _f(False, "Barrel distortion ([barrdistortion]).")
    pincdistortion: bool = _f(False, "Pincushion distortion ([pincdistortion]).")
    probability: float = _f(0.5, "Probability that each enabled transform is applied to a sample.")
    gaussian_noise: bool = _f(False, "CT: additive Gaussian noise.")
    noise_std: tuple = _f((0.0, 0.1), "CT: noise std range (image scaled to [0,1]).")
    gaussian_blur: bool = _f(False, "CT: Gaussian blur.")
    blur_sigma: tuple = _f((0.5, 1.0), "CT: blur sigma range in pixels.")
    contrast: bool = _f(False, "CT: contrast scaling.")
    contrast_range: tuple = _f((0.75, 1.25), "CT: contrast factor range.")
    gamma: bool = _f(False, "CT: gamma correction.")
    gamma_range: tuple = _f((0.7, 1.5), "CT: gamma range.")
    low_resolution: bool = _f(False, "CT: low-resolution simulation (down then up).")
    low_resolution_zoom: tuple = _f((0.5, 1.0), "CT: downsampling factor range.")
    scaling: bool = _f(False, "CT: random zoom in/out (nnU-Net style).")
    scaling_range: tuple = _f((0.85, 1.25), "CT: zoom range.")
    brightness_multiplicative: bool = _f(False, "CT: multiplicative brightness.")
    brightness_range: tuple = _f((0.75, 1.25), "CT: multiplicative brightness range.")


@dataclass(frozen=True)
class DeformationConfig:
    alpha: float = _f(1300.0, "Elastic deformation magnitude (pixels-scale).", aliases=("alpah",))
    sigmoids: tuple = _f((8.0,), "Elastic deformation smoothness (Gaussian sigmas).")


@dataclass(frozen=True)
class DistortionConfig:
    gaussian_filter_rsigma: float = _f(40.0, "Smoothing sigma of the random displacement field.")
    gaussian_filter_sigma: float = _f(0.5, "Smoothing of the distorted image.")
    distortions: tuple = _f((0.02, 0.03), "Displacement magnitudes as a fraction of the image size.")


@dataclass(frozen=True)
class SharpeningConfig:
    k: float = _f(1.0, "Unsharp-mask strength.")


@dataclass(frozen=True)
class BrighteningConfig:
    alpha: float = _f(1.2, "Contrast gain.")
    beta: float = _f(10.0, "Brightness offset (0..255 scale).")


@dataclass(frozen=True)
class RadialDistortionConfig:
    radius: float = _f(0.3, "Radius of the distortion as a fraction of the image size.")
    amount: float = _f(0.3, "Strength: > 0 barrel, < 0 pincushion.")
    centers: tuple = _f(((0.5, 0.5),), "Candidate centres as (x, y) fractions.")


@dataclass(frozen=True)
class Config:
    """The whole parsed config. ``base_dir`` is the folder of the config file."""

    model: ModelConfig
    dataset: DatasetConfig
    train: TrainConfig
    valid: SplitDirs
    test: SplitDirs
    infer: InferConfig
    tiledinfer: TiledInferConfig
    image: ImageConfig
    mask: MaskConfig
    slice: SliceConfig
    augmentor: AugmentorConfig
    deformation: DeformationConfig
    distortion: DistortionConfig
    sharpening: SharpeningConfig
    brightening: BrighteningConfig
    barrdistortion: RadialDistortionConfig
    pincdistortion: RadialDistortionConfig
    base_dir: str = "."
    source: str = "<defaults>"

    @property
    def class_names(self) -> list[str]:
        """Name of each class id (background first)."""
        n = self.model.num_classes
        if self.mask.class_names:
            return list(self.mask.class_names)
        if n == 3:
            return ["background", "liver", "tumour"]
        if n == 2:
            return ["background", "liver"]
        return ["background"] + [f"class_{i}" for i in range(1, n)]

    @property
    def class_colors(self) -> list[tuple[int, int, int]]:
        """Colour of each class id, ordered by id."""
        inv = {cid: col for col, cid in self.mask.rgb_map.items()}
        return [tuple(inv[i]) for i in range(len(inv))]


#: section name -> dataclass
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "train": TrainConfig,
    "valid": SplitDirs,
    "test": SplitDirs,
    "infer": InferConfig,
    "tiledinfer": TiledInferConfig,
    "image": ImageConfig,
    "mask": MaskConfig,
    "slice": SliceConfig,
    "augmentor": AugmentorConfig,
    "deformation": DeformationConfig,
    "distortion": DistortionConfig,
    "sharpening": SharpeningConfig,
    "brightening": BrighteningConfig,
    "barrdistortion": RadialDistortionConfig,
    "pincdistortion": RadialDistortionConfig,
}

#: keys holding paths, resolved against the config file's folder
PATH_KEYS = {
    "model": {"pretrained"},
    "train": {"model_dir", "eval_dir", "images_dir", "masks_dir", "epoch_change_infer_dir"},
    "valid": {"images_dir", "masks_dir"},
    "test": {"images_dir", "masks_dir"},
    "infer": {"images_dir", "output_dir", "overlay_dir", "merged_dir"},
    "tiledinfer": {"images_dir", "output_dir", "merged_dir"},
    "slice": {"cases_dir", "output_dir"},
}

DEFAULT_RGB_MAP = {(0, 0, 0): 0, (0, 0, 255): 1, (255, 0, 0): 2}
