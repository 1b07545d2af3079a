"""The explain suite's vocabulary and parameters: method and check names, the groups
methods fall into, and the validated `ExplainParams` (`ExplainSuite.Params`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from workbench.errors import ConfigError, check_name_list, check_number, check_positive_int, check_probability

GRADIENT = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift", "occlusion")
SAMPLING = ("lime", "shapley", "shap_kernel", "shap_gradient", "shap_deep")
ATTENTION = ("attention", "rollout")
METHODS = GRADIENT + SAMPLING + ATTENTION
QUALITY_CHECKS = ("completeness", "deletion", "insertion", "sanity", "stability", "infidelity", "sensitivity",
                  "ground_truth")
REPLACEMENTS = ("zero", "mean", "blur", "sample")
# methods whose own property is sum(phi) = f(x) - f(reference)
COMPLETE = ("integrated_gradients", "deeplift", "shapley", "shap_kernel", "shap_gradient", "shap_deep")
# methods whose efficiency is a constraint of their solver: a zero gap says nothing about accuracy
COMPLETE_BY_CONSTRUCTION = ("shapley", "shap_kernel")
# methods whose output depends on a seed (stability across two seeds is measured)
RANDOMISED = ("smoothgrad", "lime", "shapley", "shap_kernel", "shap_gradient")
# what every attribution of a padded token model says about its pad positions (tag `pads`)
PAD_NOTE = "pad positions are not players: attribution exactly 0, never perturbed"
# shap's DeepExplainer and captum's DeepLift rules do not cover these layers
KNOWN_NONLINEAR = ("GELU", "SiLU", "Mish", "Hardswish", "LayerNorm", "GroupNorm", "LSTM", "GRU", "RNN",
                   "MultiheadAttention", "Softsign", "Hardtanh", "PReLU", "ReLU6", "SELU", "CELU", "ELU",
                   "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Softmax", "MaxPool1d", "MaxPool2d", "MaxPool3d")


def method_seed(seed: int, method: str) -> int:
    """The seed of one method's randomness: the run seed plus a stable hash of its name."""
    return int(seed) + zlib.crc32(method.encode()) % 100_000


@dataclass(frozen=True, kw_only=True)
class ExplainParams:
    """methods: attribution methods to run (those that do not apply to a model are listed
    with the reason in meta.json and a null `method_coverage`). n_examples: test
    examples explained. explained_output: "logit" or "probability" of the predicted class
    (classification; regression explains the mean). ig_steps: Gauss-Legendre steps of
    integrated gradients. smoothgrad_samples / smoothgrad_noise: noisy copies and noise
    std as a fraction of the input range. shap_budget: model evaluations per example
    for Shapley methods (exact enumeration when 2^M x background fits). shap_value_function:
    "baseline" (absent = zero input) or "background" (interventional, E over
    `shap_background` training inputs). shap_gradient_samples: shap GradientExplainer
    nsamples. lime_samples: LIME neighbourhood size. lime_min_r2: below it LIME's fit is
    flagged low-fidelity. n_segments: SLIC superpixels asked for on images. quality:
    checks to run. replacements: removal values for deletion/insertion (those that apply
    to the modality). curve_steps: points of each curve. completeness_tolerance: median
    relative gap above which a method is flagged as breaking its own property.
    sanity_threshold: rank correlation above which a method fails the randomisation check.
    sanity_sampling: also run the randomisation check for LIME and the SHAP methods
    (doubles their cost; off in the quick profile).
    n_perturb: perturbations for infidelity and max-sensitivity. rollout_pooling: how the
    classifier reads out tokens ("mean" for the reference Transformer, "cls", "last")."""

    methods: tuple[str, ...] = METHODS
    n_examples: int = 32
    explained_output: str = "logit"
    ig_steps: int = 64
    smoothgrad_samples: int = 32
    smoothgrad_noise: float = 0.15
    shap_budget: int = 8192
    shap_value_function: str = "baseline"
    shap_background: int = 16
    shap_gradient_samples: int = 200
    lime_samples: int = 1000
    lime_min_r2: float = 0.5
    n_segments: int = 16
    quality: tuple[str, ...] = QUALITY_CHECKS
    replacements: tuple[str, ...] = ("zero", "blur", "sample")
    curve_steps: int = 16
    random_orders: int = 16
    completeness_tolerance: float = 0.05
    sanity_threshold: float = 0.5
    sanity_sampling: bool = True
    n_perturb: int = 16
    rollout_pooling: str = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", check_name_list("methods", self.methods, METHODS))
        object.__setattr__(self, "quality", check_name_list("quality", self.quality, QUALITY_CHECKS))
        object.__setattr__(self, "replacements", check_name_list("replacements", self.replacements, REPLACEMENTS))
        if not self.methods:
            raise ConfigError("Expected at least one entry in `methods`, got none.")
        for key in ("n_examples", "ig_steps", "smoothgrad_samples", "shap_budget", "shap_background",
                    "shap_gradient_samples", "lime_samples", "n_segments", "curve_steps", "n_perturb",
                    "random_orders"):
            check_positive_int(key, getattr(self, key))
        if self.lime_samples < 10:
            raise ConfigError(f"Expected `lime_samples` >= 10, got {self.lime_samples}.")
        if self.explained_output not in ("logit", "probability"):
            raise ConfigError(f"Expected `explained_output` in ('logit', 'probability'), got {self.explained_output!r}.")
        if self.shap_value_function not in ("baseline", "background"):
            raise ConfigError(
                f"Expected `shap_value_function` in ('baseline', 'background'), got {self.shap_value_function!r}.")
        if self.rollout_pooling not in ("mean", "cls", "last"):
            raise ConfigError(f"Expected `rollout_pooling` in ('mean', 'cls', 'last'), got {self.rollout_pooling!r}.")
        for key in ("smoothgrad_noise", "lime_min_r2", "sanity_threshold"):
            check_probability(key, getattr(self, key))
        check_number("completeness_tolerance", self.completeness_tolerance, low=0, low_open=True)
