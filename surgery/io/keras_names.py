"""Where Keras itself writes classes and functions: the (module, name) pairs it serializes.

A Keras 3 / tf_keras `.keras` config names each object by `module` + `class_name` (or, for a
function, `class_name: "function"` + `config: NAME`). Keras 3 resolves a "keras.*" module
through its export table and otherwise imports the module; tf_keras imports ANY module and
takes any attribute of it (tf_keras/src/saving/serialization_lib.py,
_retrieve_class_or_fn), so a module string is a code reference and only these pairs pass.

Generated once (Keras 3.15, tf_keras 2.21, tfmot 0.8.1) by a throwaway script, hard-coded
so that the scan imports neither: for the modelling namespaces (activations, constraints,
initializers, layers(.experimental(.preprocessing)), losses, metrics(.experimental),
optimizers(.schedules/.legacy/.experimental), regularizers, dtype_policies, quantizers,
mixed_precision, models(.experimental) and random.SeedGenerator; never utils, saving,
config, backend, ops, callbacks, applications, datasets), every public class of keras.X and
tf_keras.X under "keras.X" (the module string both write: Keras 3's export name, tf_keras'
"keras" API name), and every registered canonical name there; top-level "keras" base
classes; the non-exported Functional / Sequential / tf_keras op layers under their Python
modules (including keras 2.12-2.15's module paths); tfmot's wrapper, schedule, quantizer and
quantize-config classes under their defining modules. Then checked: saving ~730 objects
and several whole models with both Keras families and tfmot wrote no pair outside these.
466 class pairs, 101 function pairs.
"""

from __future__ import annotations

KERAS_CLASSES: dict[str, frozenset[str]] = {
    "keras": frozenset(
        """
        DTypePolicy FloatDTypePolicy Initializer InputSpec Layer Loss Metric Model Optimizer
        Quantizer Regularizer Sequential
        """.split()
    ),
    "keras.constraints": frozenset(
        """
        Constraint MaxNorm MinMaxNorm NonNeg RadialConstraint UnitNorm max_norm min_max_norm
        non_neg radial_constraint unit_norm
        """.split()
    ),
    "keras.dtype_policies": frozenset(
        """
        AWQDTypePolicy DTypePolicy DTypePolicyMap FloatDTypePolicy GPTQDTypePolicy
        Int4DTypePolicy QuantizedDTypePolicy QuantizedFloat8DTypePolicy
        """.split()
    ),
    "keras.engine.functional": frozenset(
        """
        Functional
        """.split()
    ),
    "keras.engine.sequential": frozenset(
        """
        Sequential
        """.split()
    ),
    "keras.experimental": frozenset(
        """
        CosineDecay CosineDecayRestarts LinearModel SequenceFeatures WideDeepModel
        """.split()
    ),
    "keras.initializers": frozenset(
        """
        Constant GlorotNormal GlorotUniform HeNormal HeUniform Identity IdentityInitializer
        Initializer LecunNormal LecunUniform Ones Orthogonal OrthogonalInitializer RandomNormal
        RandomUniform STFT STFTInitializer TruncatedNormal VarianceScaling Zeros constant
        glorot_normal glorot_uniform he_normal he_uniform identity lecun_normal lecun_uniform
        ones orthogonal random_normal random_uniform stft truncated_normal variance_scaling
        zeros
        """.split()
    ),
    "keras.layers": frozenset(
        """
        AbstractRNNCell Activation ActivityRegularization AdaptiveAveragePooling1D
        AdaptiveAveragePooling2D AdaptiveAveragePooling3D AdaptiveMaxPooling1D
        AdaptiveMaxPooling2D AdaptiveMaxPooling3D Add AdditiveAttention AlphaDropout Attention
        AugMix AutoContrast Average AveragePooling1D AveragePooling2D AveragePooling3D AvgPool1D
        AvgPool2D AvgPool3D BatchNormalization Bidirectional CategoryEncoding CenterCrop
        Concatenate ContrastLimitedAdaptiveHistogramEqualization Conv1D Conv1DTranspose Conv2D
        Conv2DTranspose Conv3D Conv3DTranspose ConvLSTM1D ConvLSTM2D ConvLSTM3D Convolution1D
        Convolution1DTranspose Convolution2D Convolution2DTranspose Convolution3D
        Convolution3DTranspose Cropping1D Cropping2D Cropping3D CutMix Dense DenseFeatures
        DepthwiseConv1D DepthwiseConv2D Discretization Dot Dropout ELU EinsumDense Embedding
        Equalization Flatten FlaxLayer GRU GRUCell GaussianDropout GaussianNoise
        GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalAvgPool1D
        GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D
        GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GroupNormalization
        GroupQueryAttention HashedCrossing Hashing Identity InputLayer InputSpec IntegerLookup
        JaxLayer LSTM LSTMCell Lambda Layer LayerNormalization LeakyReLU LocallyConnected1D
        LocallyConnected2D Masking MaxNumBoundingBoxes MaxPool1D MaxPool2D MaxPool3D
        MaxPooling1D MaxPooling2D MaxPooling3D Maximum MelSpectrogram Minimum MixUp
        MultiHeadAttention Multiply Normalization PReLU Permute Pipeline RMSNormalization RNN
        RandAugment RandomBrightness RandomColorDegeneration RandomColorJitter RandomContrast
        RandomCrop RandomElasticTransform RandomErasing RandomFlip RandomGaussianBlur
        RandomGrayscale RandomHeight RandomHue RandomInvert RandomPerspective
        RandomPosterization RandomRotation RandomSaturation RandomSharpness RandomShear
        RandomTranslation RandomWidth RandomZoom ReLU RepeatVector Rescaling Reshape Resizing
        ReversibleEmbedding STFTSpectrogram SeparableConv1D SeparableConv2D
        SeparableConvolution1D SeparableConvolution2D SimpleRNN SimpleRNNCell Softmax
        Solarization SpatialDropout1D SpatialDropout2D SpatialDropout3D SpectralNormalization
        StackedRNNCells StringLookup Subtract TFSMLayer TextVectorization ThresholdedReLU
        TimeDistributed TorchModuleWrapper UnitNormalization UpSampling1D UpSampling2D
        UpSampling3D Wrapper ZeroPadding1D ZeroPadding2D ZeroPadding3D
        """.split()
    ),
    "keras.layers.core.tf_op_layer": frozenset(
        """
        ClassMethod InstanceMethod InstanceProperty SlicingOpLambda TFOpLambda
        """.split()
    ),
    "keras.layers.experimental": frozenset(
        """
        DynamicEmbedding DynamicLookup EinsumDense RandomFourierFeatures SyncBatchNormalization
        """.split()
    ),
    "keras.layers.experimental.preprocessing": frozenset(
        """
        CategoryEncoding CenterCrop Discretization HashedCrossing Hashing IntegerLookup
        Normalization PreprocessingLayer RandomContrast RandomCrop RandomFlip RandomHeight
        RandomRotation RandomTranslation RandomWidth RandomZoom Rescaling Resizing StringLookup
        TextVectorization
        """.split()
    ),
    "keras.losses": frozenset(
        """
        BinaryCrossentropy BinaryFocalCrossentropy CTC CategoricalCrossentropy
        CategoricalFocalCrossentropy CategoricalGeneralizedCrossEntropy CategoricalHinge Circle
        CosineSimilarity Dice Hinge Huber KLDivergence LogCosh Loss MeanAbsoluteError
        MeanAbsolutePercentageError MeanSquaredError MeanSquaredLogarithmicError Poisson
        Reduction SparseCategoricalCrossentropy SquaredHinge Tversky
        """.split()
    ),
    "keras.metrics": frozenset(
        """
        AUC Accuracy BinaryAccuracy BinaryCrossentropy BinaryIoU CategoricalAccuracy
        CategoricalCrossentropy CategoricalHinge ConcordanceCorrelation CosineSimilarity F1Score
        FBetaScore FalseNegatives FalsePositives Hinge IoU KLDivergence LogCoshError Mean
        MeanAbsoluteError MeanAbsolutePercentageError MeanIoU MeanMetricWrapper
        MeanRelativeError MeanSquaredError MeanSquaredLogarithmicError MeanTensor Metric
        OneHotIoU OneHotMeanIoU PearsonCorrelation Poisson Precision PrecisionAtRecall R2Score
        Recall RecallAtPrecision RootMeanSquaredError SensitivityAtSpecificity
        SparseCategoricalAccuracy SparseCategoricalCrossentropy SparseTopKCategoricalAccuracy
        SpecificityAtSensitivity SquaredHinge Sum TopKCategoricalAccuracy TrueNegatives
        TruePositives
        """.split()
    ),
    "keras.metrics.experimental": frozenset(
        """
        PyMetric
        """.split()
    ),
    "keras.mixed_precision": frozenset(
        """
        DTypePolicy LossScaleOptimizer Policy
        """.split()
    ),
    "keras.models": frozenset(
        """
        Model Sequential
        """.split()
    ),
    "keras.models.experimental": frozenset(
        """
        SharpnessAwareMinimization
        """.split()
    ),
    "keras.optimizers": frozenset(
        """
        Adadelta Adafactor Adagrad Adam AdamW Adamax Ftrl Lamb Lion LossScaleOptimizer
        MultiOptimizer Muon Nadam Optimizer OptimizerMap RMSprop SGD ScheduleFreeAdamW
        """.split()
    ),
    "keras.optimizers.experimental": frozenset(
        """
        Adadelta Adafactor Adagrad Adam AdamW Adamax Ftrl Nadam Optimizer RMSprop SGD
        """.split()
    ),
    "keras.optimizers.legacy": frozenset(
        """
        Adadelta Adagrad Adam Adamax Ftrl Nadam Optimizer RMSprop SGD
        """.split()
    ),
    "keras.optimizers.schedules": frozenset(
        """
        CosineDecay CosineDecayRestarts ExponentialDecay InverseTimeDecay LearningRateSchedule
        PiecewiseConstantDecay PolynomialDecay
        """.split()
    ),
    "keras.quantizers": frozenset(
        """
        AWQConfig AbsMaxQuantizer Float8QuantizationConfig GPTQConfig Int4QuantizationConfig
        Int8QuantizationConfig QuantizationConfig Quantizer
        """.split()
    ),
    "keras.random": frozenset(
        """
        SeedGenerator
        """.split()
    ),
    "keras.regularizers": frozenset(
        """
        L1 L1L2 L2 OrthogonalRegularizer Regularizer l1 l1_l2 l2 orthogonal_regularizer
        """.split()
    ),
    "keras.src.engine.functional": frozenset(
        """
        Functional
        """.split()
    ),
    "keras.src.engine.sequential": frozenset(
        """
        Sequential
        """.split()
    ),
    "keras.src.layers.core.tf_op_layer": frozenset(
        """
        ClassMethod InstanceMethod InstanceProperty SlicingOpLambda TFOpLambda
        """.split()
    ),
    "keras.src.models.functional": frozenset(
        """
        Functional
        """.split()
    ),
    "keras.src.models.sequential": frozenset(
        """
        Sequential
        """.split()
    ),
    "tensorflow_model_optimization.python.core.clustering.keras.cluster_wrapper": frozenset(
        """
        ClusterWeights ClusterWeightsMHA ClusterWeightsRNN
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_configs": frozenset(
        """
        Default8BitOutputQuantizeConfig
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry": frozenset(
        """
        Default8BitActivationQuantizeConfig Default8BitConvQuantizeConfig
        Default8BitConvTransposeQuantizeConfig Default8BitQuantizeConfig
        Default8BitQuantizeConfigRNN
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit.default_n_bit_quantize_configs": frozenset(
        """
        DefaultNBitOutputQuantizeConfig NoOpQuantizeConfig
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit.default_n_bit_quantize_registry": frozenset(
        """
        DefaultNBitActivationQuantizeConfig DefaultNBitConvQuantizeConfig
        DefaultNBitConvTransposeQuantizeConfig DefaultNBitQuantizeConfig
        DefaultNBitQuantizeConfigRNN
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate": frozenset(
        """
        QuantizeAnnotate
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantize_aware_activation": frozenset(
        """
        NoOpActivation QuantizeAwareActivation
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantize_config": frozenset(
        """
        FixedQuantizeConfig OutputOnlyConfig
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantize_layer": frozenset(
        """
        QuantizeLayer
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper": frozenset(
        """
        QuantizeWrapper QuantizeWrapperV2
        """.split()
    ),
    "tensorflow_model_optimization.python.core.quantization.keras.quantizers": frozenset(
        """
        AllValuesQuantizer FixedQuantizer LastValueQuantizer MovingAverageQuantizer NoQuantizer
        """.split()
    ),
    "tensorflow_model_optimization.python.core.sparsity.keras.pruning_schedule": frozenset(
        """
        ConstantSparsity PolynomialDecay PruningSchedule
        """.split()
    ),
    "tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper": frozenset(
        """
        PruneLowMagnitude
        """.split()
    ),
    "tf_keras.src.engine.functional": frozenset(
        """
        Functional
        """.split()
    ),
    "tf_keras.src.engine.sequential": frozenset(
        """
        Sequential
        """.split()
    ),
    "tf_keras.src.layers.core.tf_op_layer": frozenset(
        """
        ClassMethod InstanceMethod InstanceProperty SlicingOpLambda TFOpLambda
        """.split()
    ),
}

# Keras 3 functional models store a keras.ops call on a KerasTensor as its Operation class,
# under the class's own module (e.g. "keras.src.ops.numpy" / "NotEqual" for a mask). Every
# Operation subclass of keras.src.ops.*, minus the control-flow ones that call Python
# callables (Cond, WhileLoop, ForiLoop, Scan, AssociativeScan, Map, VectorizedMap, Switch).
# 326 pairs.
KERAS_OPERATIONS: dict[str, frozenset[str]] = {
    "keras.src.ops.core": frozenset(
        """
        Cast ConvertToTensor SaturateCast Scatter ScatterUpdate Slice SliceUpdate StopGradient
        Unstack
        """.split()
    ),
    "keras.src.ops.einops": frozenset(
        """
        Rearrange
        """.split()
    ),
    "keras.src.ops.image": frozenset(
        """
        AffineTransform CropImages ElasticTransform ExtractPatches GaussianBlur HSVToRGB
        MapCoordinates PadImages PerspectiveTransform RGBToGrayscale RGBToHSV Resize SSIM
        ScaleAndTranslate SobelEdges
        """.split()
    ),
    "keras.src.ops.linalg": frozenset(
        """
        Cholesky CholeskyInverse Det Eig Eigh Inv JVP Lstsq LuFactor MatrixRank Norm Pinv Qr SVD
        Solve SolveTriangular
        """.split()
    ),
    "keras.src.ops.math": frozenset(
        """
        CDist Erf Erfc Erfinv ExtractSequences FFT FFT2 IFFT2 IRFFT ISTFT InTopK Logdet
        Logsumexp RFFT Rsqrt STFT SegmentMax SegmentMin SegmentProd SegmentReduction SegmentSum
        TopK ViewAsComplex ViewAsReal
        """.split()
    ),
    "keras.src.ops.nn": frozenset(
        """
        AdaptiveAveragePool AdaptiveMaxPool AveragePool BatchNorm BinaryCrossentropy CTCDecode
        CTCLoss CategoricalCrossentropy Celu Conv ConvTranspose DepthToSpace DepthwiseConv
        DotProductAttention Elu Fold Gelu Glu HardShrink HardSigmoid HardSilu HardTanh LayerNorm
        LeakyRelu LogSigmoid LogSoftmax MaxPool Moments MultiHot Normalize OneHot PSNR Polar
        RMSNorm Relu Relu6 Selu SeparableConv Sigmoid Silu SoftShrink Softmax Softplus Softsign
        SpaceToDepth SparseCategoricalCrossentropy SparsePlus SparseSigmoid Sparsemax Squareplus
        TanhShrink Threshold Unfold
        """.split()
    ),
    "keras.src.ops.numpy": frozenset(
        """
        Abs Absolute Add All AllClose Amax Amin Angle Any Append Arange Arccos Arccosh Arcsin
        Arcsinh Arctan Arctan2 Arctanh Argmax Argmin Argpartition Argsort Array ArraySplit
        Average Bincount BitwiseAnd BitwiseInvert BitwiseLeftShift BitwiseNot BitwiseOr
        BitwiseRightShift BitwiseXor BroadcastTo Cbrt Ceil Clip Concatenate Conj Conjugate Copy
        Corrcoef Correlate Cos Cosh CountNonzero Cross Cumprod Cumsum Deg2rad Diag Diagflat
        Diagonal Diff Digitize Divide DivideNoNan Dot Dsplit Dstack Einsum EmptyLike Equal Exp
        Exp2 ExpandDims Expm1 Fabs Flip Fliplr Flipud Floor FloorDivide Fmax Fmin Fmod Full
        FullLike Gcd Geomspace GetItem Greater GreaterEqual Heaviside Histogram Hsplit Hstack
        Hypot I0 Imag Inner IsIn Isclose Isfinite Isinf Isnan Isneginf Isposinf Isreal Kron Lcm
        Ldexp LeftShift Less LessEqual Linspace Log Log10 Log1p Log2 Logaddexp Logaddexp2
        LogicalAnd LogicalNot LogicalOr LogicalXor Logspace Matmul Max Maximum Mean Median
        Meshgrid Min Minimum Mod Moveaxis Multiply NanToNum Nanargmax Nanargmin Nancumprod
        Nancumsum Nanmax Nanmean Nanmedian Nanmin Nanpercentile Nanprod Nanquantile Nanstd
        Nansum Nanvar Ndim Negative Nextafter Nonzero NotEqual OnesLike Outer Pad Percentile
        Power Prod Ptp Quantile Rad2deg Ravel Real Reciprocal Repeat Reshape RightShift Roll
        Rot90 Round SearchSorted Select Sign Signbit Sin Sinc Sinh Size Slogdet Sort Split Sqrt
        Square Squeeze Stack Std Subtract Sum Swapaxes Take TakeAlongAxis Tan Tanh Tensordot
        Tile Trace Transpose Trapezoid Tril Triu TrueDivide Trunc Unique UnravelIndex Vander Var
        Vdot View Vsplit Vstack Where ZerosLike
        """.split()
    ),
}
KERAS_CLASSES.update(KERAS_OPERATIONS)

# Function references {"class_name": "function", "module": M, "config": NAME}: the public
# activation / loss / metric functions (never get / serialize / deserialize).
KERAS_FUNCTIONS: dict[str, frozenset[str]] = {
    "keras.activations": frozenset(
        """
        celu elu exponential gelu glu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh
        leaky_relu linear log_sigmoid log_softmax mish relu relu6 selu sigmoid silu soft_shrink
        softmax softplus softsign sparse_plus sparse_sigmoid sparsemax squareplus swish tanh
        tanh_shrink threshold
        """.split()
    ),
    "keras.losses": frozenset(
        """
        KLD MAE MAPE MSE MSLE binary_crossentropy binary_focal_crossentropy
        categorical_crossentropy categorical_focal_crossentropy
        categorical_generalized_cross_entropy categorical_hinge circle cosine_similarity ctc
        dice hinge huber kl_divergence kld kullback_leibler_divergence log_cosh logcosh mae mape
        mean_absolute_error mean_absolute_percentage_error mean_squared_error
        mean_squared_logarithmic_error mse msle poisson sparse_categorical_crossentropy
        squared_hinge tversky
        """.split()
    ),
    "keras.metrics": frozenset(
        """
        KLD MAE MAPE MSE MSLE binary_accuracy binary_crossentropy binary_focal_crossentropy
        categorical_accuracy categorical_crossentropy categorical_focal_crossentropy
        categorical_hinge concordance_correlation hinge huber kl_divergence kld
        kullback_leibler_divergence log_cosh logcosh mae mape mean_absolute_error
        mean_absolute_percentage_error mean_squared_error mean_squared_logarithmic_error mse
        msle pearson_correlation poisson sparse_categorical_accuracy
        sparse_categorical_crossentropy sparse_top_k_categorical_accuracy squared_hinge
        top_k_categorical_accuracy
        """.split()
    ),
}
