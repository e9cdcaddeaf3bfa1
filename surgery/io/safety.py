"""Static safety scan of a serialized model config, run BEFORE any Keras deserialization.

Keras rebuilds a model by looking up classes and functions named in the config. Some of
those run arbitrary code (a Lambda's marshalled bytecode), load other artifacts
(TFSMLayer), reach outside Keras (a `module` naming a foreign package), or are not
modelling APIs at all (`keras.config.enable_unsafe_deserialization`, `get_file`). This
module walks the config as plain JSON data, names every such place, and refuses it unless
the user opted in.

Keys that carry code references, from keras/src/saving/serialization_lib.py:
`class_name`, `module`, `registered_name` (custom objects are "package>Name"),
`config` when class_name is "function" (the function's name), `spec_name` (TypeSpecs);
Lambda layers carry `function` ({"class_name": "__lambda__", "config": {"code": ...}} in
Keras 3, base64 marshalled bytecode plus "function_type": "lambda" in Keras 2).

Allowlists, not denylists: a `module` passes only with a class or function Keras itself
writes there (keras_names.py); a class_name without a module only if Keras knows it;
tf_keras op layers only with pure TensorFlow ops and tensor attributes (tf_pure_ops.py).
Values that name a file (a string `vocabulary`, any `*_file` / `*_path` / `filepath` key)
or a URL anywhere are refused as "file_reference": tf_keras reads a vocabulary file while
the model is rebuilt, even in its safe mode.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from surgery.errors import UnsafeContentError
from surgery.io.keras_names import KERAS_CLASSES, KERAS_FUNCTIONS
from surgery.io.tf_pure_ops import (
    CLASS_METHOD_SYMBOLS,
    CLASS_METHODS,
    TENSOR_ATTRIBUTES,
    TF_PURE_OPS,
)


@dataclass(frozen=True)
class Finding:
    path: str  # where in the config, e.g. "config.layers[2].config.layer.config.function"
    # "lambda" | "foreign_module" | "tfsmlayer" | "unsafe_api" | "custom_object" | "file_reference"
    kind: str
    detail: str  # human text naming the offending value


# Which (module, name) pairs pass: exactly where Keras 3, tf_keras and tfmot write their
# own classes and functions (surgery/keras_names.py). tf_keras imports any module a config
# names and takes any attribute of it, so a module outside that table is foreign even
# under "keras." (keras.src.utils.file_utils) or "tf_keras.".
# TypeSpecs Keras 3 writes for InputLayer / KerasTensor specs, by TensorFlow module.
KERAS_TYPESPECS = {
    "tensorflow.python.framework.tensor": frozenset({"TensorSpec"}),
    "tensorflow.python.framework.sparse_tensor": frozenset({"SparseTensorSpec"}),
    "tensorflow.python.ops.ragged.ragged_tensor": frozenset({"RaggedTensorSpec"}),
}

LAMBDA_NAMES = frozenset({"Lambda", "__lambda__"})
TFSM_NAMES = frozenset({"TFSMLayer"})
# Layers that load pickled / foreign code by design when rebuilt.
CODE_LOADING_NAMES = frozenset({"TorchModuleWrapper"})

# Non-modelling APIs and code-execution primitives, matched against each dotted or
# "package>name" component of a code reference.
UNSAFE_API_NAMES = frozenset(
    {
        "enable_unsafe_deserialization",
        "get_file",
        "load_model",
        "load_weights",
        "save_model",
        "save_weights",
        "model_from_json",
        "model_from_yaml",
        "model_from_config",
        "deserialize_keras_object",
        "register_keras_serializable",
        "clear_session",
        "load_img",
        "save_img",
        "exec",
        "eval",
        "compile",
        "execfile",
        "__import__",
        "import_module",
        "system",
        "popen",
        "spawn",
        "subprocess",
        "pickle",
        "marshal",
        "func_load",
    }
)
# Importing any of these is a code-execution or filesystem primitive in itself.
UNSAFE_MODULE_ROOTS = frozenset(
    {
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "pickle",
        "cPickle",
        "_pickle",
        "marshal",
        "shutil",
        "importlib",
        "runpy",
        "code",
        "ctypes",
        "socket",
        "pty",
        "dill",
        "cloudpickle",
        "joblib",
        "webbrowser",
        "urllib",
        "requests",
    }
)
# tf_keras op-wrapper layers look a TensorFlow symbol up by the name in their config
# (tf_keras/src/layers/core/tf_op_layer.py); only the pure ops in tf_pure_ops pass.
TF_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
TF_CLASS_METHOD_LAYERS = frozenset({"ClassMethod"})
TF_ATTRIBUTE_LAYERS = frozenset({"InstanceMethod", "InstanceProperty"})

# tf_keras registers its own optimizers under the default "Custom" package.
KERAS_REGISTERED_NAMES = frozenset(
    "Custom>" + name
    for name in (
        "Adadelta Adafactor Adagrad Adam AdamW Adamax Ftrl Lion Nadam RMSprop SGD "
        "SharpnessAwareMinimization"
    ).split()
)
KERAS_PACKAGES = frozenset({"keras", "tf_keras"})

# Public class names of keras / tf_keras layers, initializers, regularizers, constraints,
# dtype policies, optimizers, losses and metrics, plus the serialization markers. Used
# to tell a custom class from a known one; a known name is never flagged by itself.
KNOWN_CLASS_NAMES = frozenset(
    """
    AUC AWQDTypePolicy AbstractRNNCell Accuracy Activation ActivityRegularization Adadelta
    Adafactor Adagrad Adam AdamW Adamax AdaptiveAveragePooling1D AdaptiveAveragePooling2D
    AdaptiveAveragePooling3D AdaptiveMaxPooling1D AdaptiveMaxPooling2D AdaptiveMaxPooling3D
    Add AdditiveAttention AlphaDropout Attention AugMix AutoContrast Average
    AveragePooling1D AveragePooling2D AveragePooling3D AvgPool1D AvgPool2D AvgPool3D
    BaseLossScaleOptimizer BatchNormalization Bidirectional BinaryAccuracy
    BinaryCrossentropy BinaryFocalCrossentropy BinaryIoU CTC CategoricalAccuracy
    CategoricalCrossentropy CategoricalFocalCrossentropy CategoricalGeneralizedCrossEntropy
    CategoricalHinge CategoryEncoding CenterCrop Circle Concatenate ConcordanceCorrelation
    Constant Constraint ContrastLimitedAdaptiveHistogramEqualization Conv1D Conv1DTranspose
    Conv2D Conv2DTranspose Conv3D Conv3DTranspose ConvLSTM1D ConvLSTM2D ConvLSTM3D
    Convolution1D Convolution1DTranspose Convolution2D Convolution2DTranspose Convolution3D
    Convolution3DTranspose CosineDecay CosineDecayRestarts CosineSimilarity Cropping1D
    Cropping2D Cropping3D CutMix DTypePolicy DTypePolicyMap Dense DenseFeatures
    DepthwiseConv1D DepthwiseConv2D Dice Discretization Dot Dropout DynamicEmbedding
    DynamicLookup ELU EinsumDense Embedding Equalization ExponentialDecay F1Score
    FBetaScore FalseNegatives FalsePositives Flatten FloatDTypePolicy Ftrl
    GPTQDTypePolicy GRU GRUCell GRUCellV2 GRUV2 GaussianDropout GaussianNoise
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalAvgPool1D
    GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D
    GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GlorotNormal GlorotUniform
    GroupNormalization GroupQueryAttention GroupedQueryAttention HashedCrossing Hashing
    HeNormal HeUniform Hinge Huber Identity IdentityInitializer Initializer InputLayer
    InputSpec Int4DTypePolicy IntegerLookup InverseTimeDecay IoU KLDivergence L1 L1L2 L2
    LSTM LSTMCell LSTMCellV2 LSTMV2 Lamb Layer LayerNormalization LeakyReLU
    LearningRateSchedule LecunNormal LecunUniform Lion LocallyConnected1D
    LocallyConnected2D LogCosh LogCoshError Loss LossScaleOptimizer
    LossScaleOptimizerV3 Masking MaxNorm MaxNumBoundingBoxes MaxPool1D MaxPool2D
    MaxPool3D MaxPooling1D MaxPooling2D MaxPooling3D Maximum Mean MeanAbsoluteError
    MeanAbsolutePercentageError MeanIoU MeanMetricWrapper MeanRelativeError
    MeanSquaredError MeanSquaredLogarithmicError MeanTensor MelSpectrogram Metric
    MinMaxNorm Minimum MixUp Model MultiHeadAttention MultiOptimizer Multiply Muon Nadam
    NonNeg Normalization OneHotIoU OneHotMeanIoU Ones Optimizer OptimizerMap OptimizerV2
    Orthogonal OrthogonalInitializer OrthogonalRegularizer PReLU PearsonCorrelation
    Permute PiecewiseConstantDecay Pipeline Poisson Policy PolynomialDecay Precision
    PrecisionAtRecall QuantizedDTypePolicy QuantizedFloat8DTypePolicy R2Score
    RMSNormalization RMSprop RNN RadialConstraint RandAugment RandomBrightness
    RandomColorDegeneration RandomColorJitter RandomContrast RandomCrop
    RandomElasticTransform RandomErasing RandomFlip RandomFourierFeatures
    RandomGaussianBlur RandomGrayscale RandomHeight RandomHue RandomInvert RandomNormal
    RandomPerspective RandomPosterization RandomRotation RandomSaturation RandomSharpness
    RandomShear RandomTranslation RandomUniform RandomWidth RandomZoom ReLU Recall
    RecallAtPrecision Reduction ReductionV2 Regularizer RepeatVector Rescaling Reshape
    Resizing ReversibleEmbedding RootMeanSquaredError SGD STFT STFTInitializer
    STFTSpectrogram ScheduleFreeAdamW SensitivityAtSpecificity SeparableConv1D
    SeparableConv2D SeparableConvolution1D SeparableConvolution2D Sequential SimpleRNN
    SimpleRNNCell Softmax Solarization SparseCategoricalAccuracy
    SparseCategoricalCrossentropy SparseTopKCategoricalAccuracy SpatialDropout1D
    SpatialDropout2D SpatialDropout3D SpecificityAtSensitivity SpectralNormalization
    SquaredHinge StackedRNNCells StringLookup Subtract Sum SyncBatchNormalization
    TextVectorization ThresholdedReLU TimeDistributed TopKCategoricalAccuracy
    TrueNegatives TruePositives TruncatedNormal Tversky UnitNorm UnitNormalization
    UpSampling1D UpSampling2D UpSampling3D VarianceScaling Wrapper ZeroPadding1D
    ZeroPadding2D ZeroPadding3D Zeros constant glorot_normal glorot_uniform he_normal
    he_uniform identity l1 l1_l2 l2 lecun_normal lecun_uniform max_norm min_max_norm
    non_neg ones orthogonal orthogonal_regularizer radial_constraint random_normal
    random_uniform stft truncated_normal unit_norm variance_scaling zeros
    Functional TFOpLambda SlicingOpLambda ClassMethod InstanceMethod InstanceProperty
    TensorShape TypeSpec CompositeTensor function
    __keras_tensor__ __tensor__ __numpy__ __bytes__ __tuple__ __typespec__
    __ellipsis__ __slice__
    CuDNNGRU CuDNNLSTM normal uniform
    NumericColumn BucketizedColumn EmbeddingColumn SharedEmbeddingColumn CrossedColumn
    HashedCategoricalColumn VocabularyFileCategoricalColumn VocabularyListCategoricalColumn
    IdentityCategoricalColumn WeightedCategoricalColumn IndicatorColumn
    SequenceCategoricalColumn SequenceNumericColumn SequenceDenseColumn
    """.split()
).union(*KERAS_CLASSES.values())
# (Above: the Keras 2 names tf_keras resolves without a module: every class of
# KERAS_CLASSES, tf.compat.v1.keras' CuDNN layers and initializer aliases, and the
# feature columns DenseFeatures / SequenceFeatures deserialize from their own table.)

# Serialization markers: class_name values Keras decodes itself, never looked up as code.
SERIALIZATION_MARKERS = frozenset(
    """
    __keras_tensor__ __tensor__ __numpy__ __bytes__ __tuple__ __ellipsis__ __slice__
    TensorShape TypeSpec CompositeTensor
    """.split()
)

# Functions Keras 3 may write as {"module": "builtins", "class_name": "function", ...}:
# for module "builtins" it resolves the name only inside keras.activations / losses /
# metrics / initializers / regularizers / constraints / optimizers, so these are safe.
KNOWN_FUNCTION_NAMES = frozenset(
    """
    KLD MAE MAPE MSE MSLE binary_accuracy binary_crossentropy binary_focal_crossentropy
    categorical_accuracy categorical_crossentropy categorical_focal_crossentropy
    categorical_generalized_cross_entropy categorical_hinge celu circle
    concordance_correlation cosine_similarity ctc dice elu exponential gelu glu
    hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh hinge huber kl_divergence
    kld kullback_leibler_divergence l1_l2 leaky_relu linear log_cosh log_sigmoid
    log_softmax logcosh mae mape mean_absolute_error mean_absolute_percentage_error
    mean_squared_error mean_squared_logarithmic_error mish mse msle pearson_correlation
    poisson relu relu6 selu sigmoid silu soft_shrink softmax softplus softsign
    sparse_categorical_accuracy sparse_categorical_crossentropy sparse_plus
    sparse_sigmoid sparse_top_k_categorical_accuracy sparsemax squared_hinge squareplus
    swish tanh tanh_shrink threshold top_k_categorical_accuracy tversky
    """.split()
).union(*KERAS_FUNCTIONS.values())
KERAS_FUNCTION_MODULES = {**KERAS_FUNCTIONS, "builtins": KNOWN_FUNCTION_NAMES}

# Config values that name a file: Keras 3 / tf_keras IndexLookup (StringLookup,
# IntegerLookup, TextVectorization, the experimental.preprocessing variants) read a
# `vocabulary` given as a string path (tf_keras even in its safe mode), feature columns a
# `vocabulary_file`, TFSMLayer a `filepath`; the rest are the keys any loader would read a
# file or URL from. A vocabulary given as a list (or array) is data and stays fine.
PATH_KEYS = frozenset(
    """
    vocabulary vocabulary_file vocab_file vocabulary_path vocab_path initial_vocabulary
    filepath file_path filename file_name fname file files path paths dir dirname
    directory logdir log_dir url uri urls origin cache_dir cache_subdir export_dir
    saved_model_dir model_dir model_path weights_path weights_file asset_path assets_dir
    """.split()
)
PATH_KEY_SUFFIXES = (
    "_file", "_files", "_path", "_paths", "_dir", "_directory", "_url", "_uri", "filepath",
    "filename",
)
# "scheme://" (http, gs, s3, hdfs, ram, file, ...) or "file:" anywhere in a value.
_URL = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://|file:)", re.IGNORECASE)

_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.>][A-Za-z_][A-Za-z0-9_]*)+")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")
_REFERENCE_SEPARATORS = re.compile(r"[.>/:]")
# marshal type codes for a code object ('c', with or without the FLAG_REF bit).
_MARSHAL_CODE_TYPES = (0x63, 0xE3)
_MIN_BYTECODE_TEXT = 24

# Keys whose string values _check_object already judges in context.
_IDENTITY_KEYS = frozenset({"class_name", "module", "registered_name", "spec_name"})

_OPT_IN_UNSAFE = "pass --unsafe if you trust this file"
_OPT_IN_CUSTOM = (
    "register it with --custom-objects FILE.py, or pass --unsafe if you trust this file"
)


# ----------------------------------------------------------------------------------------
# Public API


def scan_config(config: dict) -> list[Finding]:
    """Every unsafe place in a serialized model config, in document order."""
    return [finding for finding, _ in _scan(config)]


def ensure_safe(
    config: dict, *, allow_unsafe: bool = False, trusted: Iterable[str] = ()
) -> None:
    """Raise UnsafeContentError unless every finding is opted into.

    `trusted`: registered names ("package>Name") or class / function names the user
    registered through --custom-objects; they allow custom objects and foreign modules,
    never Lambdas, TFSMLayers or non-modelling APIs (only allow_unsafe does).
    """
    if allow_unsafe:
        return
    trusted_names = frozenset(trusted)
    refused = [
        finding for finding, trust_keys in _scan(config) if not (trust_keys & trusted_names)
    ]
    if not refused:
        return
    first = refused[0]
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    opt_in = _OPT_IN_CUSTOM if first.kind in ("custom_object", "foreign_module") else _OPT_IN_UNSAFE
    message = (
        f"refusing unsafe model content: {first.kind} at {_shorten(first.path)}: "
        f"{first.detail}{more}; {opt_in}"
    )
    # Keys and values come from the file: keep the message on one line whatever they hold.
    raise UnsafeContentError(message.replace("\r", "\\r").replace("\n", "\\n"))


def ensure_artifact_safe(
    artifact, *, allow_unsafe: bool = False, trusted: Iterable[str] = ()
) -> None:
    """The one safety gate before a file's content reaches Keras.

    Covers the container hazards the static read recorded (artifact.hazards), the model
    config, and every embedded config the loader would deserialize on its own.
    """
    if allow_unsafe:
        return
    if artifact.hazards:
        first = artifact.hazards[0]
        more = f" (and {len(artifact.hazards) - 1} more)" if len(artifact.hazards) > 1 else ""
        message = (
            f"refusing unsafe model content: {first.kind} at {_shorten(first.path)}: "
            f"{first.detail}{more}; {_OPT_IN_UNSAFE}"
        )
        raise UnsafeContentError(message.replace("\r", "\\r").replace("\n", "\\n"))
    if artifact.model_config is not None:
        ensure_safe(artifact.model_config, trusted=trusted)
    for where, config in artifact.embedded_configs:
        try:
            ensure_safe(config, trusted=trusted)
        except UnsafeContentError as error:
            raise UnsafeContentError(f"{error} [in {where}]") from None


def _shorten(path: str, limit: int = 400) -> str:
    """A path from absurdly deep nesting would flood the message; keep both ends."""
    if len(path) <= limit:
        return path
    return f"{path[:150]}...{path[-(limit - 153):]}"


# ----------------------------------------------------------------------------------------
# The walk: explicit stack, so nesting depth cannot exhaust the Python stack


# A location is a linked list (parent location, key), rendered only for findings: keeping
# full path strings for every node would cost O(depth^2) on deep nesting.
_Location = tuple  # (parent: _Location | None, key: str | int) or None for the root


def _scan(config: Any) -> list[tuple[Finding, frozenset[str]]]:
    results: list[tuple[Finding, frozenset[str]]] = []
    for location, value in _walk(config):
        key = location[1] if location is not None else None
        if isinstance(value, dict):
            check = _check_object(value)
        elif key in _IDENTITY_KEYS:
            continue  # already judged with the object that holds it
        else:
            check = _check_string(value, key)
        if check is not None:
            kind, detail, trust_keys = check
            results.append((Finding(_render(location), kind, detail), trust_keys))
    return results


def _walk(root: Any) -> Iterator[tuple[_Location | None, Any]]:
    """Pre-order walk yielding every dict and every string, with its location."""
    stack: list[tuple[_Location | None, Any]] = [(None, root)]
    seen: set[int] = set()  # guards against cyclic structures built in Python
    while stack:
        location, value = stack.pop()
        if isinstance(value, str):
            yield location, value
            continue
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            yield location, value
        for key, child in reversed(items):
            if isinstance(child, (dict, list, tuple, str)):
                stack.append(((location, key), child))


def _render(location: _Location | None) -> str:
    keys = []
    while location is not None:
        location, key = location
        keys.append(key)
    parts = []
    for key in reversed(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            text = key if isinstance(key, str) and key.isprintable() else repr(key)
            parts.append(f".{text}" if parts else text)
    return "".join(parts) or "(root)"


# ----------------------------------------------------------------------------------------
# Checks. Each returns (kind, detail, trust keys) or None; trust keys are the names that,
# when registered by the user, make the finding acceptable (empty: never by trust).

_Check = tuple  # (kind: str, detail: str, trust_keys: frozenset[str])
_NOT_TRUSTABLE: frozenset[str] = frozenset()


def _check_object(obj: dict) -> _Check | None:
    class_name = _text(obj.get("class_name"))
    module = _text(obj.get("module"))
    registered = _text(obj.get("registered_name"))
    function_name = _text(obj.get("config")) if class_name == "function" else None
    names = {n for n in (class_name, registered and _last_part(registered)) if n}

    return (
        _check_lambda(obj, names)
        or _check_tfsmlayer(obj, names)
        or _check_unsafe_api(obj, class_name, module, registered, function_name, names)
        or _check_op_layer(obj, class_name or registered, names)
        or _check_module(obj, class_name, module, registered, function_name)
        or _check_registered_name(class_name, registered)
    )


def _check_lambda(obj: dict, names: set[str]) -> _Check | None:
    if names & LAMBDA_NAMES:
        if "__lambda__" in names:
            return "lambda", "a Python lambda (marshalled bytecode)", _NOT_TRUSTABLE
        layer = _text(_inner(obj).get("name")) or _text(obj.get("name")) or "?"
        return "lambda", f"Lambda layer {layer!r} runs arbitrary Python code", _NOT_TRUSTABLE
    for key, value in obj.items():
        # Keras 2 Lambda configs: "function_type": "lambda", "output_shape_type": "lambda".
        if isinstance(key, str) and key.endswith("_type") and value == "lambda":
            return "lambda", f"{key!r}: 'lambda', a marshalled Python function", _NOT_TRUSTABLE
    return None


def _check_tfsmlayer(obj: dict, names: set[str]) -> _Check | None:
    if not names & TFSM_NAMES:
        return None
    target = _inner(obj).get("filepath")
    return (
        "tfsmlayer",
        f"TFSMLayer loads and runs the SavedModel at {_quote(target)}",
        _NOT_TRUSTABLE,
    )


def _check_unsafe_api(
    obj: dict,
    class_name: str | None,
    module: str | None,
    registered: str | None,
    function_name: str | None,
    names: set[str],
) -> _Check | None:
    if names & CODE_LOADING_NAMES:
        return "unsafe_api", f"{class_name or registered!r} loads pickled code", _NOT_TRUSTABLE
    if module is not None and _root(module) in UNSAFE_MODULE_ROOTS:
        target = f"{module}.{function_name or class_name}"
        return "unsafe_api", f"reference to {target!r} (module {module!r})", _NOT_TRUSTABLE
    references = [
        value
        for value in (module, class_name, registered, function_name, _text(obj.get("spec_name")))
        if value
    ]
    for reference in references:
        hit = _unsafe_component(reference)
        if hit:
            full = ".".join(part for part in (module, function_name or class_name) if part)
            return "unsafe_api", f"non-modelling API {hit!r} in {full!r}", _NOT_TRUSTABLE
    return None


def _check_op_layer(obj: dict, layer: str | None, names: set[str]) -> _Check | None:
    """tf_keras op wrappers resolve a TensorFlow symbol or attribute by name at load time."""
    inner = _inner(obj)
    if names & TF_OP_LAYERS:
        function = inner.get("function")
        if isinstance(function, str) and function in TF_PURE_OPS:
            return None
        what = f"TensorFlow symbol {_quote('tf.' + function)}" if isinstance(function, str) \
            else f"function {_quote(function)}"
        return "unsafe_api", f"{layer!r} calls {what}, not a pure tensor op", _NOT_TRUSTABLE
    if names & TF_CLASS_METHOD_LAYERS:
        symbol, method = inner.get("cls_symbol"), inner.get("method_name")
        if symbol in CLASS_METHOD_SYMBOLS and method in CLASS_METHODS:
            return None
        return (
            "unsafe_api",
            f"{layer!r} calls {_quote(symbol)}.{_quote(method)}, not a tensor constructor",
            _NOT_TRUSTABLE,
        )
    if names & TF_ATTRIBUTE_LAYERS:
        attribute = inner.get("attr_name")
        if attribute in TENSOR_ATTRIBUTES:
            return None
        return (
            "unsafe_api",
            f"{layer!r} reads attribute {_quote(attribute)}, not a tensor method or property",
            _NOT_TRUSTABLE,
        )
    return None


def _check_module(
    obj: dict,
    class_name: str | None,
    module: str | None,
    registered: str | None,
    function_name: str | None,
) -> _Check | None:
    raw_module = obj.get("module")
    if class_name is not None and raw_module is not None and module is None:
        return "foreign_module", f"module {_quote(raw_module)} is not a module name", _NOT_TRUSTABLE
    if class_name is None:
        if module is None or module in KERAS_CLASSES or module in KERAS_FUNCTION_MODULES:
            return None
        return "foreign_module", f"module {module!r} outside Keras", frozenset()
    if class_name in SERIALIZATION_MARKERS:
        return None  # decoded by Keras itself; module and registered_name are not read
    trust = _trust_keys(class_name, registered, function_name, module)
    if class_name == "__typespec__":
        spec = _text(obj.get("spec_name"))
        if module in KERAS_TYPESPECS and spec in KERAS_TYPESPECS[module]:
            return None
        return (
            "foreign_module",
            f"TypeSpec {_quote(obj.get('spec_name'))} from module {_quote(module)}",
            frozenset({spec} - {None}),
        )
    if class_name == "function":
        allowed = KERAS_FUNCTION_MODULES.get(module) if module else KNOWN_FUNCTION_NAMES
        # Keras 3 looks a non-"builtins" function up by registered_name: both must pass.
        names_ok = function_name in (allowed or ()) and (
            module == "builtins" or registered in (None, function_name, "function")
        )
        if names_ok:
            return None
        # Keras 3 writes a registered custom function as module "builtins" with the
        # "package>name" registration as its config.
        custom = module is None or any(name and ">" in name for name in (function_name, registered))
        where = f"from module {module!r}" if module else "without a module"
        return (
            "custom_object" if custom else "foreign_module",
            f"function {_quote(obj.get('config'))} {where}, not a Keras function",
            trust,
        )
    custom_registration = bool(registered and ">" in registered)
    if module is None:
        # Keras 2 configs, and Keras 3 objects without "module": resolved only among the
        # Keras classes of that kind or the user's custom objects.
        known = class_name in KNOWN_CLASS_NAMES or _keras_registration(class_name)
        if known and not custom_registration:
            return None
        return (
            "custom_object",
            f"custom class {class_name!r}"
            + (f" (registered as {registered!r})" if registered else ""),
            trust,
        )
    if class_name in KERAS_CLASSES.get(module, ()):
        return None
    if class_name in KNOWN_CLASS_NAMES and not custom_registration:
        return (
            "foreign_module",
            f"class {class_name!r} from module {module!r}, not where Keras writes it",
            trust,
        )
    return (
        "custom_object",
        f"custom class {class_name!r} from module {module!r}"
        + (f" (registered as {registered!r})" if registered else ""),
        trust,
    )


def _check_registered_name(class_name: str | None, registered: str | None) -> _Check | None:
    # Keras 3 puts "package>Name" in registered_name; Keras 2 puts it in class_name.
    for name in (registered, class_name):
        if name and ">" in name and not _keras_registration(name):
            return (
                "custom_object",
                f"custom object {name!r}",
                _trust_keys(class_name, registered, None, None),
            )
    return None


def _check_string(text: str, key: Any) -> _Check | None:
    if _looks_like_bytecode(text):
        return "lambda", "marshalled Python bytecode (base64)", _NOT_TRUSTABLE
    if isinstance(key, str) and _is_path_key(key) and text.strip():
        return "file_reference", f"{key!r} names a file: {_quote(text)}", _NOT_TRUSTABLE
    if _URL.match(text):
        return "file_reference", f"URL {_quote(text)}", _NOT_TRUSTABLE
    if _DOTTED_PATH.fullmatch(text):
        hit = _unsafe_component(text)
        if hit or _root(text) in UNSAFE_MODULE_ROOTS:
            return "unsafe_api", f"reference to {text!r}", _NOT_TRUSTABLE
    return None


# ----------------------------------------------------------------------------------------
# Small helpers


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inner(obj: dict) -> dict:
    inner = obj.get("config")
    return inner if isinstance(inner, dict) else {}


def _quote(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root(module: str) -> str:
    return module.split(".", 1)[0]


def _last_part(reference: str) -> str:
    return reference.rsplit(">", 1)[-1]


def _is_path_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in PATH_KEYS or lowered.endswith(PATH_KEY_SUFFIXES)


def _unsafe_component(reference: str) -> str | None:
    for part in _REFERENCE_SEPARATORS.split(reference):
        if part in UNSAFE_API_NAMES:
            return part
    return None


def _keras_registration(name: str) -> bool:
    package, _, rest = name.partition(">")
    return name in KERAS_REGISTERED_NAMES or (package in KERAS_PACKAGES and rest in KNOWN_CLASS_NAMES)


def _trust_keys(
    class_name: str | None, registered: str | None, function_name: str | None, module: str | None
) -> frozenset[str]:
    keys = {registered, function_name}
    if class_name != "function":
        keys.add(class_name)
        if module and class_name:
            keys.add(f"{module}.{class_name}")
    keys.discard("function")
    return frozenset(key for key in keys if key)


def _looks_like_bytecode(text: str) -> bool:
    """base64 text that decodes to a marshalled code object, as func_dump writes it."""
    if len(text) < _MIN_BYTECODE_TEXT or not _BASE64_TEXT.fullmatch(text):
        return False
    head = "".join(text[:64].split())[:8]  # 8 base64 chars -> 6 bytes
    try:
        decoded = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    # A code object starts with its type byte, then a little-endian int32 argcount, which
    # is small: three zero bytes make this specific enough to rule out ordinary text.
    return (
        len(decoded) >= 5
        and decoded[0] in _MARSHAL_CODE_TYPES
        and decoded[2:5] == b"\x00\x00\x00"
    )
