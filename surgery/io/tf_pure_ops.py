"""TensorFlow symbols the tf_keras op-wrapper layers may call: pure tensor math only.

tf_keras turns a TensorFlow call on a KerasTensor into a layer that stores the symbol's API
name and looks it up again at load time (tf_keras/src/layers/core/tf_op_layer.py):
`TFOpLambda` / `SlicingOpLambda` (config key `function`, e.g. "math.add"), `ClassMethod`
(`cls_symbol` + `method_name`), `InstanceMethod` / `InstanceProperty` (`attr_name`). Any
exported symbol resolves, including `io.write_file` or `io.write_graph`, so a file may name
only what is listed here.

Generated once (TensorFlow 2.21) by a throwaway script, and hard-coded so that the static
scan never imports TensorFlow: every name in tf_export's name -> symbol table that is
  * in one of the namespaces top level, math, math.special, nn, linalg, linalg.experimental,
    signal, spectral, bitwise, __operators__, sparse, ragged, strings, random, dtypes, image,
    sets, manip (or their compat.v1 / compat.v2 aliases),
  * a function (classes such as Variable, Module or TensorArray are refused), and
  * defined (after unwrapping decorators) in TensorFlow's pure op modules: array, math, nn,
    linalg, signal, bitwise, ragged, sparse, string, random (stateless and stateful draws),
    image, sets, sort, clip, check, histogram, bincount, confusion_matrix, embedding, ctc,
    constant_op, tensor_conversion, dtypes;
minus names with effects outside the tensor: set_seed / set_random_seed, print,
py_func / py_function / numpy_function, read_file / write_file, random Generators, the
candidate samplers (`fixed_unigram_candidate_sampler` reads a `vocab_file`),
make_tensor_proto, matching_files, register_tensor_conversion_function, and the image
decode_* / encode_* codecs. Everything in io, gfile, summary, saved_model, data, train,
config, debugging, distribute, raw_ops, compat.v1.layers, lookup, control flow helpers
taking Python callables (cond, while_loop, map_fn, scan, ...), gradients, variables and
load_library stays out by namespace or module. 1482 names.
"""

from __future__ import annotations

TF_PURE_OPS = frozenset(
    """
    __operators__.add __operators__.eq __operators__.getitem __operators__.ne
    __operators__.ragged_getitem abs acos acosh add add_n approx_top_k argmax argmin argsort
    as_dtype as_string asin asinh assert_equal assert_greater assert_less assert_rank atan atan2
    atanh batch_to_space bitcast bitwise.bitwise_and bitwise.bitwise_or bitwise.bitwise_xor
    bitwise.invert bitwise.left_shift bitwise.right_shift boolean_mask broadcast_dynamic_shape
    broadcast_static_shape broadcast_to cast clip_by_global_norm clip_by_norm clip_by_value
    compat.v1.abs compat.v1.accumulate_n compat.v1.acos compat.v1.acosh compat.v1.add
    compat.v1.add_check_numerics_ops compat.v1.add_n compat.v1.angle compat.v1.approx_top_k
    compat.v1.arg_max compat.v1.arg_min compat.v1.argmax compat.v1.argmin compat.v1.argsort
    compat.v1.as_dtype compat.v1.as_string compat.v1.asin compat.v1.asinh compat.v1.assert_equal
    compat.v1.assert_greater compat.v1.assert_greater_equal compat.v1.assert_integer
    compat.v1.assert_less compat.v1.assert_less_equal compat.v1.assert_near
    compat.v1.assert_negative compat.v1.assert_non_negative compat.v1.assert_non_positive
    compat.v1.assert_none_equal compat.v1.assert_positive compat.v1.assert_proper_iterable
    compat.v1.assert_rank compat.v1.assert_rank_at_least compat.v1.assert_rank_in
    compat.v1.assert_same_float_dtype compat.v1.assert_scalar compat.v1.assert_type
    compat.v1.atan compat.v1.atan2 compat.v1.atanh compat.v1.batch_gather
    compat.v1.batch_to_space compat.v1.batch_to_space_nd compat.v1.betainc compat.v1.bincount
    compat.v1.bitcast compat.v1.bitwise.bitwise_and compat.v1.bitwise.bitwise_or
    compat.v1.bitwise.bitwise_xor compat.v1.bitwise.invert compat.v1.bitwise.left_shift
    compat.v1.bitwise.right_shift compat.v1.boolean_mask compat.v1.broadcast_dynamic_shape
    compat.v1.broadcast_static_shape compat.v1.broadcast_to compat.v1.cast compat.v1.ceil
    compat.v1.check_numerics compat.v1.cholesky compat.v1.cholesky_solve
    compat.v1.clip_by_average_norm compat.v1.clip_by_global_norm compat.v1.clip_by_norm
    compat.v1.clip_by_value compat.v1.complex compat.v1.concat compat.v1.confusion_matrix
    compat.v1.conj compat.v1.constant compat.v1.conv compat.v1.conv2d_backprop_filter_v2
    compat.v1.conv2d_backprop_input_v2 compat.v1.convert_to_tensor compat.v1.cos compat.v1.cosh
    compat.v1.count_nonzero compat.v1.cross compat.v1.cumprod compat.v1.cumsum
    compat.v1.decode_base64 compat.v1.depth_to_space compat.v1.dequantize
    compat.v1.deserialize_many_sparse compat.v1.diag compat.v1.diag_part compat.v1.digamma
    compat.v1.div compat.v1.div_no_nan compat.v1.divide compat.v1.dtypes.as_dtype
    compat.v1.dtypes.as_string compat.v1.dtypes.cast compat.v1.dtypes.complex
    compat.v1.dtypes.saturate_cast compat.v1.edit_distance compat.v1.einsum
    compat.v1.encode_base64 compat.v1.ensure_shape compat.v1.equal compat.v1.erf compat.v1.erfc
    compat.v1.exp compat.v1.expand_dims compat.v1.expm1 compat.v1.extract_image_patches
    compat.v1.extract_volume_patches compat.v1.eye compat.v1.fake_quant_with_min_max_args
    compat.v1.fake_quant_with_min_max_args_gradient compat.v1.fake_quant_with_min_max_vars
    compat.v1.fake_quant_with_min_max_vars_gradient
    compat.v1.fake_quant_with_min_max_vars_per_channel
    compat.v1.fake_quant_with_min_max_vars_per_channel_gradient compat.v1.fft compat.v1.fft2d
    compat.v1.fft3d compat.v1.fftnd compat.v1.fill compat.v1.fingerprint compat.v1.floor
    compat.v1.floor_div compat.v1.floordiv compat.v1.floormod compat.v1.gather
    compat.v1.gather_nd compat.v1.global_norm compat.v1.greater compat.v1.greater_equal
    compat.v1.guarantee_const compat.v1.histogram_fixed_width
    compat.v1.histogram_fixed_width_bins compat.v1.identity compat.v1.identity_n compat.v1.ifft
    compat.v1.ifft2d compat.v1.ifft3d compat.v1.ifftnd compat.v1.igamma compat.v1.igammac
    compat.v1.imag compat.v1.image.adjust_brightness compat.v1.image.adjust_contrast
    compat.v1.image.adjust_gamma compat.v1.image.adjust_hue compat.v1.image.adjust_jpeg_quality
    compat.v1.image.adjust_saturation compat.v1.image.central_crop
    compat.v1.image.combined_non_max_suppression compat.v1.image.convert_image_dtype
    compat.v1.image.crop_and_resize compat.v1.image.crop_to_bounding_box
    compat.v1.image.draw_bounding_boxes compat.v1.image.extract_glimpse
    compat.v1.image.extract_image_patches compat.v1.image.extract_jpeg_shape
    compat.v1.image.extract_patches compat.v1.image.flip_left_right compat.v1.image.flip_up_down
    compat.v1.image.generate_bounding_box_proposals compat.v1.image.grayscale_to_rgb
    compat.v1.image.hsv_to_rgb compat.v1.image.image_gradients compat.v1.image.is_jpeg
    compat.v1.image.non_max_suppression compat.v1.image.non_max_suppression_overlaps
    compat.v1.image.non_max_suppression_padded compat.v1.image.non_max_suppression_with_scores
    compat.v1.image.pad_to_bounding_box compat.v1.image.per_image_standardization
    compat.v1.image.psnr compat.v1.image.random_brightness compat.v1.image.random_contrast
    compat.v1.image.random_crop compat.v1.image.random_flip_left_right
    compat.v1.image.random_flip_up_down compat.v1.image.random_hue
    compat.v1.image.random_jpeg_quality compat.v1.image.random_saturation compat.v1.image.resize
    compat.v1.image.resize_area compat.v1.image.resize_bicubic compat.v1.image.resize_bilinear
    compat.v1.image.resize_image_with_crop_or_pad compat.v1.image.resize_image_with_pad
    compat.v1.image.resize_images compat.v1.image.resize_nearest_neighbor
    compat.v1.image.resize_with_crop_or_pad compat.v1.image.rgb_to_grayscale
    compat.v1.image.rgb_to_hsv compat.v1.image.rgb_to_yiq compat.v1.image.rgb_to_yuv
    compat.v1.image.rot90 compat.v1.image.sample_distorted_bounding_box
    compat.v1.image.sobel_edges compat.v1.image.ssim compat.v1.image.ssim_multiscale
    compat.v1.image.total_variation compat.v1.image.transpose compat.v1.image.transpose_image
    compat.v1.image.yiq_to_rgb compat.v1.image.yuv_to_rgb compat.v1.invert_permutation
    compat.v1.irfftnd compat.v1.is_finite compat.v1.is_inf compat.v1.is_nan
    compat.v1.is_non_decreasing compat.v1.is_numeric_tensor compat.v1.is_strictly_increasing
    compat.v1.lbeta compat.v1.less compat.v1.less_equal compat.v1.lgamma compat.v1.lin_space
    compat.v1.linalg.adjoint compat.v1.linalg.band_part compat.v1.linalg.cholesky
    compat.v1.linalg.cholesky_solve compat.v1.linalg.cross compat.v1.linalg.det
    compat.v1.linalg.diag compat.v1.linalg.diag_part compat.v1.linalg.eigh
    compat.v1.linalg.eigh_tridiagonal compat.v1.linalg.eigvalsh compat.v1.linalg.einsum
    compat.v1.linalg.experimental.conjugate_gradient compat.v1.linalg.expm compat.v1.linalg.eye
    compat.v1.linalg.global_norm compat.v1.linalg.inv compat.v1.linalg.l2_normalize
    compat.v1.linalg.logdet compat.v1.linalg.logm compat.v1.linalg.lstsq compat.v1.linalg.lu
    compat.v1.linalg.lu_matrix_inverse compat.v1.linalg.lu_reconstruct compat.v1.linalg.lu_solve
    compat.v1.linalg.matmul compat.v1.linalg.matrix_rank compat.v1.linalg.matrix_transpose
    compat.v1.linalg.matvec compat.v1.linalg.norm compat.v1.linalg.normalize
    compat.v1.linalg.pinv compat.v1.linalg.qr compat.v1.linalg.set_diag compat.v1.linalg.slogdet
    compat.v1.linalg.solve compat.v1.linalg.sqrtm compat.v1.linalg.svd
    compat.v1.linalg.tensor_diag compat.v1.linalg.tensor_diag_part compat.v1.linalg.tensordot
    compat.v1.linalg.trace compat.v1.linalg.transpose compat.v1.linalg.triangular_solve
    compat.v1.linalg.tridiagonal_matmul compat.v1.linalg.tridiagonal_solve compat.v1.linspace
    compat.v1.log compat.v1.log1p compat.v1.log_sigmoid compat.v1.logical_and
    compat.v1.logical_not compat.v1.logical_or compat.v1.logical_xor
    compat.v1.manip.batch_to_space_nd compat.v1.manip.gather_nd compat.v1.manip.reshape
    compat.v1.manip.reverse compat.v1.manip.roll compat.v1.manip.scatter_nd
    compat.v1.manip.space_to_batch_nd compat.v1.manip.tile compat.v1.math.abs
    compat.v1.math.accumulate_n compat.v1.math.acos compat.v1.math.acosh compat.v1.math.add
    compat.v1.math.add_n compat.v1.math.angle compat.v1.math.approx_max_k
    compat.v1.math.approx_min_k compat.v1.math.argmax compat.v1.math.argmin compat.v1.math.asin
    compat.v1.math.asinh compat.v1.math.atan compat.v1.math.atan2 compat.v1.math.atanh
    compat.v1.math.bessel_i0 compat.v1.math.bessel_i0e compat.v1.math.bessel_i1
    compat.v1.math.bessel_i1e compat.v1.math.betainc compat.v1.math.bincount compat.v1.math.ceil
    compat.v1.math.confusion_matrix compat.v1.math.conj compat.v1.math.cos compat.v1.math.cosh
    compat.v1.math.count_nonzero compat.v1.math.cumprod compat.v1.math.cumsum
    compat.v1.math.cumulative_logsumexp compat.v1.math.digamma compat.v1.math.divide
    compat.v1.math.divide_no_nan compat.v1.math.equal compat.v1.math.erf compat.v1.math.erfc
    compat.v1.math.erfcinv compat.v1.math.erfinv compat.v1.math.exp compat.v1.math.expm1
    compat.v1.math.floor compat.v1.math.floordiv compat.v1.math.floormod compat.v1.math.greater
    compat.v1.math.greater_equal compat.v1.math.igamma compat.v1.math.igammac
    compat.v1.math.imag compat.v1.math.in_top_k compat.v1.math.invert_permutation
    compat.v1.math.is_finite compat.v1.math.is_inf compat.v1.math.is_nan
    compat.v1.math.is_non_decreasing compat.v1.math.is_strictly_increasing
    compat.v1.math.l2_normalize compat.v1.math.lbeta compat.v1.math.less
    compat.v1.math.less_equal compat.v1.math.lgamma compat.v1.math.log compat.v1.math.log1p
    compat.v1.math.log_sigmoid compat.v1.math.log_softmax compat.v1.math.logical_and
    compat.v1.math.logical_not compat.v1.math.logical_or compat.v1.math.logical_xor
    compat.v1.math.maximum compat.v1.math.minimum compat.v1.math.mod compat.v1.math.multiply
    compat.v1.math.multiply_no_nan compat.v1.math.ndtri compat.v1.math.negative
    compat.v1.math.nextafter compat.v1.math.not_equal compat.v1.math.polygamma
    compat.v1.math.polyval compat.v1.math.pow compat.v1.math.real compat.v1.math.reciprocal
    compat.v1.math.reciprocal_no_nan compat.v1.math.reduce_all compat.v1.math.reduce_any
    compat.v1.math.reduce_euclidean_norm compat.v1.math.reduce_logsumexp
    compat.v1.math.reduce_max compat.v1.math.reduce_mean compat.v1.math.reduce_min
    compat.v1.math.reduce_prod compat.v1.math.reduce_std compat.v1.math.reduce_sum
    compat.v1.math.reduce_variance compat.v1.math.rint compat.v1.math.round compat.v1.math.rsqrt
    compat.v1.math.scalar_mul compat.v1.math.segment_max compat.v1.math.segment_mean
    compat.v1.math.segment_min compat.v1.math.segment_prod compat.v1.math.segment_sum
    compat.v1.math.sigmoid compat.v1.math.sign compat.v1.math.sin compat.v1.math.sinh
    compat.v1.math.sobol_sample compat.v1.math.softmax compat.v1.math.softplus
    compat.v1.math.softsign compat.v1.math.special.bessel_i0 compat.v1.math.special.bessel_i0e
    compat.v1.math.special.bessel_i1 compat.v1.math.special.bessel_i1e
    compat.v1.math.special.bessel_j0 compat.v1.math.special.bessel_j1
    compat.v1.math.special.bessel_k0 compat.v1.math.special.bessel_k0e
    compat.v1.math.special.bessel_k1 compat.v1.math.special.bessel_k1e
    compat.v1.math.special.bessel_y0 compat.v1.math.special.bessel_y1
    compat.v1.math.special.dawsn compat.v1.math.special.expint
    compat.v1.math.special.fresnel_cos compat.v1.math.special.fresnel_sin
    compat.v1.math.special.spence compat.v1.math.sqrt compat.v1.math.square
    compat.v1.math.squared_difference compat.v1.math.subtract compat.v1.math.tan
    compat.v1.math.tanh compat.v1.math.top_k compat.v1.math.truediv
    compat.v1.math.unsorted_segment_max compat.v1.math.unsorted_segment_mean
    compat.v1.math.unsorted_segment_min compat.v1.math.unsorted_segment_prod
    compat.v1.math.unsorted_segment_sqrt_n compat.v1.math.unsorted_segment_sum
    compat.v1.math.xdivy compat.v1.math.xlog1py compat.v1.math.xlogy
    compat.v1.math.zero_fraction compat.v1.math.zeta compat.v1.matmul compat.v1.matrix_band_part
    compat.v1.matrix_determinant compat.v1.matrix_diag compat.v1.matrix_diag_part
    compat.v1.matrix_inverse compat.v1.matrix_set_diag compat.v1.matrix_solve
    compat.v1.matrix_solve_ls compat.v1.matrix_square_root compat.v1.matrix_transpose
    compat.v1.matrix_triangular_solve compat.v1.maximum compat.v1.meshgrid compat.v1.minimum
    compat.v1.mod compat.v1.multinomial compat.v1.multiply compat.v1.negative
    compat.v1.nn.approx_max_k compat.v1.nn.approx_min_k compat.v1.nn.atrous_conv2d
    compat.v1.nn.atrous_conv2d_transpose compat.v1.nn.avg_pool compat.v1.nn.avg_pool1d
    compat.v1.nn.avg_pool2d compat.v1.nn.avg_pool3d compat.v1.nn.avg_pool_v2
    compat.v1.nn.batch_norm_with_global_normalization compat.v1.nn.batch_normalization
    compat.v1.nn.bias_add compat.v1.nn.collapse_repeated compat.v1.nn.compute_accidental_hits
    compat.v1.nn.compute_average_loss compat.v1.nn.conv1d compat.v1.nn.conv1d_transpose
    compat.v1.nn.conv2d compat.v1.nn.conv2d_backprop_filter compat.v1.nn.conv2d_backprop_input
    compat.v1.nn.conv2d_transpose compat.v1.nn.conv3d compat.v1.nn.conv3d_backprop_filter
    compat.v1.nn.conv3d_backprop_filter_v2 compat.v1.nn.conv3d_transpose
    compat.v1.nn.conv_transpose compat.v1.nn.convolution compat.v1.nn.crelu
    compat.v1.nn.ctc_beam_search_decoder compat.v1.nn.ctc_beam_search_decoder_v2
    compat.v1.nn.ctc_greedy_decoder compat.v1.nn.ctc_loss compat.v1.nn.ctc_loss_v2
    compat.v1.nn.ctc_unique_labels compat.v1.nn.depth_to_space compat.v1.nn.depthwise_conv2d
    compat.v1.nn.depthwise_conv2d_backprop_filter compat.v1.nn.depthwise_conv2d_backprop_input
    compat.v1.nn.depthwise_conv2d_native compat.v1.nn.depthwise_conv2d_native_backprop_filter
    compat.v1.nn.depthwise_conv2d_native_backprop_input compat.v1.nn.dilation2d
    compat.v1.nn.dropout compat.v1.nn.elu compat.v1.nn.embedding_lookup
    compat.v1.nn.embedding_lookup_sparse compat.v1.nn.erosion2d compat.v1.nn.fractional_avg_pool
    compat.v1.nn.fractional_max_pool compat.v1.nn.fused_batch_norm compat.v1.nn.in_top_k
    compat.v1.nn.l2_loss compat.v1.nn.l2_normalize compat.v1.nn.leaky_relu
    compat.v1.nn.local_response_normalization compat.v1.nn.log_poisson_loss
    compat.v1.nn.log_softmax compat.v1.nn.lrn compat.v1.nn.max_pool compat.v1.nn.max_pool1d
    compat.v1.nn.max_pool2d compat.v1.nn.max_pool3d compat.v1.nn.max_pool_v2
    compat.v1.nn.max_pool_with_argmax compat.v1.nn.moments compat.v1.nn.nce_loss
    compat.v1.nn.normalize_moments compat.v1.nn.pool compat.v1.nn.quantized_avg_pool
    compat.v1.nn.quantized_conv2d compat.v1.nn.quantized_max_pool compat.v1.nn.quantized_relu_x
    compat.v1.nn.relu compat.v1.nn.relu6 compat.v1.nn.relu_layer
    compat.v1.nn.safe_embedding_lookup_sparse compat.v1.nn.sampled_softmax_loss
    compat.v1.nn.scale_regularization_loss compat.v1.nn.selu compat.v1.nn.separable_conv2d
    compat.v1.nn.sigmoid compat.v1.nn.sigmoid_cross_entropy_with_logits compat.v1.nn.silu
    compat.v1.nn.softmax compat.v1.nn.softmax_cross_entropy_with_logits
    compat.v1.nn.softmax_cross_entropy_with_logits_v2 compat.v1.nn.softplus
    compat.v1.nn.softsign compat.v1.nn.space_to_batch compat.v1.nn.space_to_depth
    compat.v1.nn.sparse_softmax_cross_entropy_with_logits compat.v1.nn.sufficient_statistics
    compat.v1.nn.swish compat.v1.nn.tanh compat.v1.nn.top_k
    compat.v1.nn.weighted_cross_entropy_with_logits compat.v1.nn.weighted_moments
    compat.v1.nn.with_space_to_batch compat.v1.nn.xw_plus_b compat.v1.nn.zero_fraction
    compat.v1.norm compat.v1.not_equal compat.v1.one_hot compat.v1.ones compat.v1.ones_like
    compat.v1.pad compat.v1.parallel_stack compat.v1.placeholder
    compat.v1.placeholder_with_default compat.v1.polygamma compat.v1.pow compat.v1.qr
    compat.v1.quantize compat.v1.quantize_v2 compat.v1.quantized_concat
    compat.v1.ragged.boolean_mask compat.v1.ragged.constant compat.v1.ragged.constant_value
    compat.v1.ragged.cross compat.v1.ragged.cross_hashed compat.v1.ragged.map_flat_values
    compat.v1.ragged.placeholder compat.v1.ragged.range
    compat.v1.ragged.row_splits_to_segment_ids compat.v1.ragged.segment_ids_to_row_splits
    compat.v1.ragged.stack compat.v1.ragged.stack_dynamic_partitions
    compat.v1.ragged_fill_empty_rows compat.v1.ragged_fill_empty_rows_grad
    compat.v1.random.categorical compat.v1.random.fold_in compat.v1.random.gamma
    compat.v1.random.multinomial compat.v1.random.normal compat.v1.random.poisson
    compat.v1.random.shuffle compat.v1.random.split compat.v1.random.stateless_binomial
    compat.v1.random.stateless_categorical compat.v1.random.stateless_gamma
    compat.v1.random.stateless_multinomial compat.v1.random.stateless_normal
    compat.v1.random.stateless_parameterized_truncated_normal compat.v1.random.stateless_poisson
    compat.v1.random.stateless_truncated_normal compat.v1.random.stateless_uniform
    compat.v1.random.truncated_normal compat.v1.random.uniform compat.v1.random_crop
    compat.v1.random_gamma compat.v1.random_normal compat.v1.random_poisson
    compat.v1.random_shuffle compat.v1.random_uniform compat.v1.range compat.v1.rank
    compat.v1.real compat.v1.realdiv compat.v1.reciprocal compat.v1.reduce_all
    compat.v1.reduce_any compat.v1.reduce_join compat.v1.reduce_logsumexp compat.v1.reduce_max
    compat.v1.reduce_mean compat.v1.reduce_min compat.v1.reduce_prod compat.v1.reduce_sum
    compat.v1.regex_replace compat.v1.repeat compat.v1.required_space_to_batch_paddings
    compat.v1.reshape compat.v1.reverse compat.v1.reverse_sequence compat.v1.reverse_v2
    compat.v1.rfftnd compat.v1.rint compat.v1.roll compat.v1.round compat.v1.rsqrt
    compat.v1.saturate_cast compat.v1.scalar_mul compat.v1.scatter_nd compat.v1.searchsorted
    compat.v1.segment_max compat.v1.segment_mean compat.v1.segment_min compat.v1.segment_prod
    compat.v1.segment_sum compat.v1.self_adjoint_eig compat.v1.self_adjoint_eigvals
    compat.v1.sequence_mask compat.v1.serialize_many_sparse compat.v1.serialize_sparse
    compat.v1.setdiff1d compat.v1.sets.difference compat.v1.sets.intersection
    compat.v1.sets.set_difference compat.v1.sets.set_intersection compat.v1.sets.set_size
    compat.v1.sets.set_union compat.v1.sets.size compat.v1.sets.union compat.v1.shape
    compat.v1.shape_n compat.v1.sigmoid compat.v1.sign compat.v1.signal.dct compat.v1.signal.fft
    compat.v1.signal.fft2d compat.v1.signal.fft3d compat.v1.signal.fftnd
    compat.v1.signal.fftshift compat.v1.signal.frame compat.v1.signal.hamming_window
    compat.v1.signal.hann_window compat.v1.signal.idct compat.v1.signal.ifft
    compat.v1.signal.ifft2d compat.v1.signal.ifft3d compat.v1.signal.ifftnd
    compat.v1.signal.ifftshift compat.v1.signal.inverse_mdct compat.v1.signal.inverse_stft
    compat.v1.signal.inverse_stft_window_fn compat.v1.signal.irfft compat.v1.signal.irfft2d
    compat.v1.signal.irfft3d compat.v1.signal.irfftnd
    compat.v1.signal.kaiser_bessel_derived_window compat.v1.signal.kaiser_window
    compat.v1.signal.linear_to_mel_weight_matrix compat.v1.signal.mdct
    compat.v1.signal.mfccs_from_log_mel_spectrograms compat.v1.signal.overlap_and_add
    compat.v1.signal.rfft compat.v1.signal.rfft2d compat.v1.signal.rfft3d
    compat.v1.signal.rfftnd compat.v1.signal.stft compat.v1.signal.vorbis_window compat.v1.sin
    compat.v1.sinh compat.v1.size compat.v1.slice compat.v1.sort compat.v1.space_to_batch
    compat.v1.space_to_batch_nd compat.v1.space_to_depth compat.v1.sparse.add
    compat.v1.sparse.bincount compat.v1.sparse.concat compat.v1.sparse.cross
    compat.v1.sparse.cross_hashed compat.v1.sparse.expand_dims compat.v1.sparse.eye
    compat.v1.sparse.fill_empty_rows compat.v1.sparse.from_dense compat.v1.sparse.mask
    compat.v1.sparse.matmul compat.v1.sparse.maximum compat.v1.sparse.merge
    compat.v1.sparse.minimum compat.v1.sparse.placeholder compat.v1.sparse.reduce_max
    compat.v1.sparse.reduce_max_sparse compat.v1.sparse.reduce_sum
    compat.v1.sparse.reduce_sum_sparse compat.v1.sparse.reorder compat.v1.sparse.reset_shape
    compat.v1.sparse.reshape compat.v1.sparse.retain compat.v1.sparse.segment_mean
    compat.v1.sparse.segment_sqrt_n compat.v1.sparse.segment_sum compat.v1.sparse.slice
    compat.v1.sparse.softmax compat.v1.sparse.sparse_dense_matmul compat.v1.sparse.split
    compat.v1.sparse.to_dense compat.v1.sparse.to_indicator compat.v1.sparse.transpose
    compat.v1.sparse_add compat.v1.sparse_concat compat.v1.sparse_fill_empty_rows
    compat.v1.sparse_mask compat.v1.sparse_matmul compat.v1.sparse_maximum
    compat.v1.sparse_merge compat.v1.sparse_minimum compat.v1.sparse_placeholder
    compat.v1.sparse_reduce_max compat.v1.sparse_reduce_max_sparse compat.v1.sparse_reduce_sum
    compat.v1.sparse_reduce_sum_sparse compat.v1.sparse_reorder compat.v1.sparse_reset_shape
    compat.v1.sparse_reshape compat.v1.sparse_retain compat.v1.sparse_segment_mean
    compat.v1.sparse_segment_sqrt_n compat.v1.sparse_segment_sum compat.v1.sparse_slice
    compat.v1.sparse_softmax compat.v1.sparse_split compat.v1.sparse_tensor_dense_matmul
    compat.v1.sparse_tensor_to_dense compat.v1.sparse_to_dense compat.v1.sparse_to_indicator
    compat.v1.sparse_transpose compat.v1.spectral.dct compat.v1.spectral.fft
    compat.v1.spectral.fft2d compat.v1.spectral.fft3d compat.v1.spectral.idct
    compat.v1.spectral.ifft compat.v1.spectral.ifft2d compat.v1.spectral.ifft3d
    compat.v1.spectral.irfft compat.v1.spectral.irfft2d compat.v1.spectral.irfft3d
    compat.v1.spectral.rfft compat.v1.spectral.rfft2d compat.v1.spectral.rfft3d compat.v1.split
    compat.v1.sqrt compat.v1.square compat.v1.squared_difference compat.v1.squeeze
    compat.v1.stack compat.v1.stop_gradient compat.v1.strided_slice compat.v1.string_join
    compat.v1.string_split compat.v1.string_strip compat.v1.string_to_hash_bucket
    compat.v1.string_to_hash_bucket_fast compat.v1.string_to_hash_bucket_strong
    compat.v1.string_to_number compat.v1.strings.as_string compat.v1.strings.bytes_split
    compat.v1.strings.format compat.v1.strings.join compat.v1.strings.length
    compat.v1.strings.lower compat.v1.strings.ngrams compat.v1.strings.reduce_join
    compat.v1.strings.regex_full_match compat.v1.strings.regex_replace compat.v1.strings.split
    compat.v1.strings.strip compat.v1.strings.substr compat.v1.strings.to_hash_bucket
    compat.v1.strings.to_hash_bucket_fast compat.v1.strings.to_hash_bucket_strong
    compat.v1.strings.to_number compat.v1.strings.unicode_decode
    compat.v1.strings.unicode_decode_with_offsets compat.v1.strings.unicode_encode
    compat.v1.strings.unicode_script compat.v1.strings.unicode_split
    compat.v1.strings.unicode_split_with_offsets compat.v1.strings.unicode_transcode
    compat.v1.strings.unsorted_segment_join compat.v1.strings.upper compat.v1.substr
    compat.v1.subtract compat.v1.svd compat.v1.tan compat.v1.tanh compat.v1.tensor_scatter_add
    compat.v1.tensor_scatter_nd_add compat.v1.tensor_scatter_nd_max
    compat.v1.tensor_scatter_nd_min compat.v1.tensor_scatter_nd_sub
    compat.v1.tensor_scatter_nd_update compat.v1.tensor_scatter_sub
    compat.v1.tensor_scatter_update compat.v1.tensordot compat.v1.tile compat.v1.to_bfloat16
    compat.v1.to_complex128 compat.v1.to_complex64 compat.v1.to_double compat.v1.to_float
    compat.v1.to_int32 compat.v1.to_int64 compat.v1.trace compat.v1.transpose compat.v1.truediv
    compat.v1.truncated_normal compat.v1.truncatediv compat.v1.truncatemod compat.v1.unique
    compat.v1.unique_with_counts compat.v1.unravel_index compat.v1.unsorted_segment_max
    compat.v1.unsorted_segment_mean compat.v1.unsorted_segment_min
    compat.v1.unsorted_segment_prod compat.v1.unsorted_segment_sqrt_n
    compat.v1.unsorted_segment_sum compat.v1.unstack compat.v1.verify_tensor_all_finite
    compat.v1.where compat.v1.where_v2 compat.v1.zeros compat.v1.zeros_like compat.v1.zeta
    complex concat constant conv conv2d_backprop_filter_v2 conv2d_backprop_input_v2
    convert_to_tensor cos cosh cumsum divide dtypes.as_dtype dtypes.cast dtypes.complex
    dtypes.saturate_cast edit_distance eig eigvals einsum ensure_shape equal exp expand_dims
    extract_volume_patches eye fftnd fill fingerprint floor gather gather_nd greater
    greater_equal guarantee_const histogram_fixed_width histogram_fixed_width_bins identity
    identity_n ifftnd image.adjust_brightness image.adjust_contrast image.adjust_gamma
    image.adjust_hue image.adjust_jpeg_quality image.adjust_saturation image.central_crop
    image.combined_non_max_suppression image.convert_image_dtype image.crop_and_resize
    image.crop_to_bounding_box image.draw_bounding_boxes image.extract_glimpse
    image.extract_jpeg_shape image.extract_patches image.flip_left_right image.flip_up_down
    image.generate_bounding_box_proposals image.grayscale_to_rgb image.hsv_to_rgb
    image.image_gradients image.is_jpeg image.non_max_suppression
    image.non_max_suppression_overlaps image.non_max_suppression_padded
    image.non_max_suppression_with_scores image.pad_to_bounding_box
    image.per_image_standardization image.psnr image.random_brightness image.random_contrast
    image.random_crop image.random_flip_left_right image.random_flip_up_down image.random_hue
    image.random_jpeg_quality image.random_saturation image.resize image.resize_with_crop_or_pad
    image.resize_with_pad image.rgb_to_grayscale image.rgb_to_hsv image.rgb_to_yiq
    image.rgb_to_yuv image.rot90 image.sample_distorted_bounding_box image.sobel_edges
    image.ssim image.ssim_multiscale image.stateless_random_brightness
    image.stateless_random_contrast image.stateless_random_crop
    image.stateless_random_flip_left_right image.stateless_random_flip_up_down
    image.stateless_random_hue image.stateless_random_jpeg_quality
    image.stateless_random_saturation image.stateless_sample_distorted_bounding_box
    image.total_variation image.transpose image.yiq_to_rgb image.yuv_to_rgb irfftnd less
    less_equal linalg.adjoint linalg.band_part linalg.banded_triangular_solve linalg.cholesky
    linalg.cholesky_solve linalg.cross linalg.det linalg.diag linalg.diag_part linalg.eig
    linalg.eigh linalg.eigh_tridiagonal linalg.eigvals linalg.eigvalsh linalg.einsum
    linalg.experimental.conjugate_gradient linalg.expm linalg.eye linalg.global_norm linalg.inv
    linalg.l2_normalize linalg.logdet linalg.logm linalg.lstsq linalg.lu
    linalg.lu_matrix_inverse linalg.lu_reconstruct linalg.lu_solve linalg.matmul
    linalg.matrix_rank linalg.matrix_transpose linalg.matvec linalg.norm linalg.normalize
    linalg.pinv linalg.qr linalg.set_diag linalg.slogdet linalg.solve linalg.sqrtm linalg.svd
    linalg.tensor_diag linalg.tensor_diag_part linalg.tensordot linalg.trace
    linalg.triangular_solve linalg.tridiagonal_matmul linalg.tridiagonal_solve linspace
    logical_and logical_not logical_or math.abs math.accumulate_n math.acos math.acosh math.add
    math.add_n math.angle math.approx_max_k math.approx_min_k math.argmax math.argmin math.asin
    math.asinh math.atan math.atan2 math.atanh math.bessel_i0 math.bessel_i0e math.bessel_i1
    math.bessel_i1e math.betainc math.bincount math.ceil math.confusion_matrix math.conj
    math.cos math.cosh math.count_nonzero math.cumprod math.cumsum math.cumulative_logsumexp
    math.digamma math.divide math.divide_no_nan math.equal math.erf math.erfc math.erfcinv
    math.erfinv math.exp math.expm1 math.floor math.floordiv math.floormod math.greater
    math.greater_equal math.igamma math.igammac math.imag math.in_top_k math.invert_permutation
    math.is_finite math.is_inf math.is_nan math.is_non_decreasing math.is_strictly_increasing
    math.l2_normalize math.lbeta math.less math.less_equal math.lgamma math.log math.log1p
    math.log_sigmoid math.log_softmax math.logical_and math.logical_not math.logical_or
    math.logical_xor math.maximum math.minimum math.mod math.multiply math.multiply_no_nan
    math.ndtri math.negative math.nextafter math.not_equal math.polygamma math.polyval math.pow
    math.real math.reciprocal math.reciprocal_no_nan math.reduce_all math.reduce_any
    math.reduce_euclidean_norm math.reduce_logsumexp math.reduce_max math.reduce_mean
    math.reduce_min math.reduce_prod math.reduce_std math.reduce_sum math.reduce_variance
    math.rint math.round math.rsqrt math.scalar_mul math.segment_max math.segment_mean
    math.segment_min math.segment_prod math.segment_sum math.sigmoid math.sign math.sin
    math.sinh math.sobol_sample math.softmax math.softplus math.softsign math.special.bessel_i0
    math.special.bessel_i0e math.special.bessel_i1 math.special.bessel_i1e
    math.special.bessel_j0 math.special.bessel_j1 math.special.bessel_k0 math.special.bessel_k0e
    math.special.bessel_k1 math.special.bessel_k1e math.special.bessel_y0 math.special.bessel_y1
    math.special.dawsn math.special.expint math.special.fresnel_cos math.special.fresnel_sin
    math.special.spence math.sqrt math.square math.squared_difference math.subtract math.tan
    math.tanh math.top_k math.truediv math.unsorted_segment_max math.unsorted_segment_mean
    math.unsorted_segment_min math.unsorted_segment_prod math.unsorted_segment_sqrt_n
    math.unsorted_segment_sum math.xdivy math.xlog1py math.xlogy math.zero_fraction math.zeta
    matmul matrix_square_root maximum meshgrid minimum multiply negative nn.approx_max_k
    nn.approx_min_k nn.atrous_conv2d nn.atrous_conv2d_transpose nn.avg_pool nn.avg_pool1d
    nn.avg_pool2d nn.avg_pool3d nn.batch_norm_with_global_normalization nn.batch_normalization
    nn.bias_add nn.collapse_repeated nn.compute_accidental_hits nn.compute_average_loss
    nn.conv1d nn.conv1d_transpose nn.conv2d nn.conv2d_transpose nn.conv3d nn.conv3d_transpose
    nn.conv_transpose nn.convolution nn.crelu nn.ctc_beam_search_decoder nn.ctc_greedy_decoder
    nn.ctc_loss nn.ctc_unique_labels nn.depth_to_space nn.depthwise_conv2d
    nn.depthwise_conv2d_backprop_filter nn.depthwise_conv2d_backprop_input nn.dilation2d
    nn.dropout nn.elu nn.embedding_lookup nn.embedding_lookup_sparse nn.erosion2d
    nn.fractional_avg_pool nn.fractional_max_pool nn.gelu nn.in_top_k nn.isotonic_regression
    nn.l2_loss nn.l2_normalize nn.leaky_relu nn.local_response_normalization nn.log_poisson_loss
    nn.log_softmax nn.lrn nn.max_pool nn.max_pool1d nn.max_pool2d nn.max_pool3d
    nn.max_pool_with_argmax nn.moments nn.nce_loss nn.normalize_moments nn.pool nn.relu nn.relu6
    nn.safe_embedding_lookup_sparse nn.sampled_softmax_loss nn.scale_regularization_loss nn.selu
    nn.separable_conv2d nn.sigmoid nn.sigmoid_cross_entropy_with_logits nn.silu nn.softmax
    nn.softmax_cross_entropy_with_logits nn.softplus nn.softsign nn.space_to_batch
    nn.space_to_depth nn.sparse_softmax_cross_entropy_with_logits nn.sufficient_statistics
    nn.swish nn.tanh nn.top_k nn.weighted_cross_entropy_with_logits nn.weighted_moments
    nn.with_space_to_batch nn.zero_fraction norm not_equal one_hot ones ones_like pad
    parallel_stack pow ragged.boolean_mask ragged.constant ragged.cross ragged.cross_hashed
    ragged.map_flat_values ragged.range ragged.row_splits_to_segment_ids
    ragged.segment_ids_to_row_splits ragged.stack ragged.stack_dynamic_partitions
    ragged_fill_empty_rows ragged_fill_empty_rows_grad random.categorical random.fold_in
    random.gamma random.normal random.poisson random.shuffle random.split
    random.stateless_binomial random.stateless_categorical random.stateless_gamma
    random.stateless_normal random.stateless_parameterized_truncated_normal
    random.stateless_poisson random.stateless_truncated_normal random.stateless_uniform
    random.truncated_normal random.uniform range rank realdiv reduce_all reduce_any
    reduce_logsumexp reduce_max reduce_mean reduce_min reduce_prod reduce_sum repeat
    required_space_to_batch_paddings reshape reverse reverse_sequence rfftnd roll round
    saturate_cast scalar_mul scatter_nd searchsorted sequence_mask sets.difference
    sets.intersection sets.size sets.union shape shape_n sigmoid sign signal.dct signal.fft
    signal.fft2d signal.fft3d signal.fftnd signal.fftshift signal.frame signal.hamming_window
    signal.hann_window signal.idct signal.ifft signal.ifft2d signal.ifft3d signal.ifftnd
    signal.ifftshift signal.inverse_mdct signal.inverse_stft signal.inverse_stft_window_fn
    signal.irfft signal.irfft2d signal.irfft3d signal.irfftnd
    signal.kaiser_bessel_derived_window signal.kaiser_window signal.linear_to_mel_weight_matrix
    signal.mdct signal.mfccs_from_log_mel_spectrograms signal.overlap_and_add signal.rfft
    signal.rfft2d signal.rfft3d signal.rfftnd signal.stft signal.vorbis_window sin sinh size
    slice sort space_to_batch space_to_batch_nd sparse.add sparse.bincount sparse.concat
    sparse.cross sparse.cross_hashed sparse.expand_dims sparse.eye sparse.fill_empty_rows
    sparse.from_dense sparse.map_values sparse.mask sparse.maximum sparse.minimum
    sparse.reduce_max sparse.reduce_sum sparse.reorder sparse.reset_shape sparse.reshape
    sparse.retain sparse.sampled_addmm sparse.segment_mean sparse.segment_sqrt_n
    sparse.segment_sum sparse.slice sparse.softmax sparse.sparse_dense_matmul sparse.split
    sparse.to_dense sparse.to_indicator sparse.transpose split sqrt square squeeze stack
    stop_gradient strided_slice strings.as_string strings.bytes_split strings.format
    strings.join strings.length strings.lower strings.ngrams strings.reduce_join
    strings.regex_full_match strings.regex_replace strings.split strings.strip strings.substr
    strings.to_hash_bucket strings.to_hash_bucket_fast strings.to_hash_bucket_strong
    strings.to_number strings.unicode_decode strings.unicode_decode_with_offsets
    strings.unicode_encode strings.unicode_script strings.unicode_split
    strings.unicode_split_with_offsets strings.unicode_transcode strings.unsorted_segment_join
    strings.upper subtract tan tanh tensor_scatter_nd_add tensor_scatter_nd_max
    tensor_scatter_nd_min tensor_scatter_nd_sub tensor_scatter_nd_update tensordot tile
    transpose truediv truncatediv truncatemod unique unique_with_counts unravel_index unstack
    where zeros zeros_like
    """.split()
)

# ClassMethod: tf_keras only dispatches these tf.RaggedTensor constructors to it.
CLASS_METHOD_SYMBOLS = frozenset({"RaggedTensor"})
CLASS_METHODS = frozenset(
    """
    from_value_rowids from_row_splits from_row_lengths from_row_starts from_row_limits
    from_uniform_row_length from_nested_value_rowids from_nested_row_splits
    from_nested_row_lengths from_tensor from_sparse
    """.split()
)

# InstanceMethod / InstanceProperty: the ragged / sparse accessors tf_keras delegates, plain
# tensor properties, and the arithmetic / comparison / indexing dunders. Never the object
# model dunders (__class__, __init__, __globals__, __reduce__, __getattribute__, ...).
TENSOR_ATTRIBUTES = frozenset(
    """
    values flat_values row_splits nested_row_splits value_rowids nested_value_rowids nrows
    row_starts row_limits row_lengths nested_row_lengths bounding_shape with_values
    with_flat_values with_row_splits_dtype merge_dims to_tensor to_sparse indices dense_shape
    ragged_rank uniform_row_length shape dtype ndim get_shape
    from_row_lengths from_row_splits from_value_rowids
    __getitem__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__
    __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __matmul__ __rmatmul__
    __neg__ __pos__ __abs__ __invert__ __and__ __rand__ __or__ __ror__ __xor__ __rxor__
    __lt__ __le__ __gt__ __ge__ __eq__ __ne__
    """.split()
)
