"""The tables the static safety scan (surgery.io.safety) judges a config by: which Keras classes,
functions, modules and TensorFlow ops are known and pure, which names run code or read files,
and which config keys hold paths.
"""

from __future__ import annotations


from surgery.io.keras_names import KERAS_CLASSES, KERAS_FUNCTIONS


# Which (module, name) pairs pass: exactly where Keras 3, tf_keras and tfmot write their
# own classes and functions (surgery/io/keras_names.py). tf_keras imports any module a config
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
