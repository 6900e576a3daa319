"""Receptive fields: published numbers, analytic == numeric, gradient maps, no mutation, no retracing."""

from __future__ import annotations

import numpy as np
import pytest
import keras
from keras import layers

import nbviz
from nbviz.methods.receptive_field import (
    ReceptiveField,
    gradient_rf,
    receptive_field,
    rf_grid,
)
from nbviz.probe import probe
from tests.conftest import unchanged


def padding(rf, axis=0):
    """Distill's effective padding: how far the field of cell 0 reaches before pixel 0."""
    return (rf.size[axis] - 1) / 2 - rf.offset[axis]


def clip(box, shape):
    top, left, bottom, right = box
    return (max(top, 0), max(left, 0), min(bottom, shape[0]), min(right, shape[1]))


# --------------------------------------------------------------------------- worked examples


def seed_example(size=96):
    """The receptivefield package's detailed Keras example (valid convs, 2×2 average pooling)."""
    inp = keras.Input((size, size, 3), name="input_image")
    x = layers.Conv2D(2, 5)(inp)
    x = layers.Conv2D(2, 3)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(2, 3)(x)
    x = layers.Conv2D(2, 3)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(2, 3)(x)
    x = layers.Conv2D(2, 3, name="feature_grid")(x)
    return keras.Model(inp, x)


@pytest.mark.parametrize("method", ["analytic", "numeric"])
def test_seed_worked_example(method):
    model = seed_example()
    with unchanged(model):
        rf = receptive_field(model, "feature_grid", method=method)
    assert rf.method == method
    assert rf.size == (34, 34) and rf.stride == (4, 4) and rf.offset == (16.5, 16.5)
    assert rf.output_shape == (16, 16) and rf.input_shape == (96, 96) and rf.aligned
    # the receptivefield package counts from pixel edges: it prints offset (17, 17)
    assert rf.offset[0] + 0.5 == 17
    assert rf.box((0, 0)) == (0, 0, 34, 34)
    assert rf.box((15, 15)) == (60, 60, 94, 94)
    assert rf.cell((16.5, 16.5)) == (0, 0) and rf.cell((-50, 1000)) == (0, 15)
    assert all(rf.cell(rf.center((i, j))) == (i, j) for i in range(16) for j in range(16))


def test_receptivefield_keras_minimal_example():
    inp = keras.Input((64, 64, 3), name="input_image")
    x = layers.Conv2D(2, 7)(inp)
    x = layers.Conv2D(2, 5)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(2, 5, name="feature_grid")(x)
    x = layers.AveragePooling2D(2)(x)
    model = keras.Model(inp, x)
    for method in ("analytic", "numeric"):
        rf = receptive_field(model, "feature_grid", method=method)
        assert (rf.size, rf.stride, rf.offset, rf.output_shape) == (
            (20, 20), (2, 2), (9.5, 9.5), (23, 23))  # package: offset (10, 10)


def test_receptivefield_vgg_same_padding_example():
    """The package's TF example: VGG blocks with "same" 3×3 convs on a 288×288 input."""
    inp = keras.Input((288, 288, 3))
    x = inp
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        if block > 1:
            x = layers.AveragePooling2D(2, name=f"pool{block - 1}")(x)
        for i in range(convs):
            x = layers.Conv2D(1, 3, padding="same", name=f"conv{block}_{i + 1}")(x)
    model = keras.Model(inp, x)
    fm0 = receptive_field(model, "conv4_3")
    fm1 = receptive_field(model, "conv5_3")
    assert (fm0.size, fm0.stride, fm0.offset, fm0.output_shape) == ((92, 92), (8, 8), (3.5, 3.5),
                                                                    (36, 36))  # package: 4.0
    assert (fm1.size, fm1.stride, fm1.offset, fm1.output_shape) == ((196, 196), (16, 16),
                                                                    (7.5, 7.5), (18, 18))  # 8.0
    assert receptive_field(model, "conv5_3", method="numeric") == dataclass_replace(fm1, "numeric")


def dataclass_replace(rf, method):
    import dataclasses

    return dataclasses.replace(rf, method=method)


def test_receptivefield_pytorch_simple_vgg_example():
    inp = keras.Input((96, 96, 3))
    x = layers.Conv2D(1, 3)(inp)
    x = layers.Conv2D(1, 3)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(1, 3)(x)
    x = layers.Conv2D(1, 3, name="fm0")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(1, 3)(x)
    x = layers.Conv2D(1, 3, name="fm1")(x)
    model = keras.Model(inp, x)
    fm0, fm1 = receptive_field(model, "fm0"), receptive_field(model, "fm1")
    assert (fm0.size, fm0.stride, fm0.offset, fm0.output_shape) == ((14, 14), (2, 2), (6.5, 6.5),
                                                                    (42, 42))  # package: 7
    assert (fm1.size, fm1.stride, fm1.offset, fm1.output_shape) == ((32, 32), (4, 4),
                                                                    (15.5, 15.5), (17, 17))  # 16


@pytest.mark.parametrize("padding_", ["same", "valid"])
def test_receptivefield_package_test_models(padding_):
    inp = keras.Input((64, 64, 3))
    x = layers.Conv2D(2, 5, padding=padding_)(inp)
    x = layers.Conv2D(2, 3, padding=padding_, name="conv0")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(2, 3, padding=padding_)(x)
    x = layers.Conv2D(2, 3, padding=padding_, name="conv1")(x)
    model = keras.Model(inp, x)
    conv0, conv1 = receptive_field(model, "conv0"), receptive_field(model, "conv1")
    assert conv0.size == (7, 7) and conv0.stride == (1, 1)
    assert conv1.size == (16, 16) and conv1.stride == (2, 2)


# --------------------------------------------------------------------------- Distill 2019 table


def test_distill_table_vgg16():
    vgg16 = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    rf = receptive_field(vgg16, "block5_pool")
    assert (rf.size, rf.stride, padding(rf), rf.method) == ((212, 212), (32, 32), 90, "analytic")


@pytest.fixture(scope="module")
def resnet50_any_size():
    return keras.applications.ResNet50(weights=None, include_top=False, input_shape=(None, None, 3))


@pytest.fixture(scope="module")
def inceptionv3_any_size():
    return keras.applications.InceptionV3(weights=None, include_top=False,
                                          input_shape=(None, None, 3))


def test_distill_table_resnet50(resnet50_any_size):
    model = resnet50_any_size
    rf = receptive_field(model, "conv5_block3_out", input_shape=(224, 224))
    assert rf.size == (483, 483) and rf.stride == (32, 32) and rf.aligned
    # TF-Slim's resnet_v1_50: 239; Keras pads the stem's max pooling by one more pixel before
    assert padding(rf) == 241
    assert receptive_field(model, "conv5_block3_out", input_shape=(224, 224)) is rf  # cached
    assert receptive_field(model, input_shape=(224, 224)) == rf  # default: last spatial layer


def test_distill_table_inceptionv3(inceptionv3_any_size):
    rf = receptive_field(inceptionv3_any_size, "mixed10", input_shape=(299, 299))  # Mixed_7c
    assert (rf.size, rf.stride, padding(rf), rf.output_shape) == ((1311, 1311), (32, 32), 618,
                                                                  (8, 8))


def test_distill_table_mobilenet_v1():
    model = keras.applications.MobileNet(weights=None, include_top=False, alpha=0.25,
                                         input_shape=(224, 224, 3))
    rf = receptive_field(model, "conv_pw_13_relu")
    assert (rf.size, rf.stride, padding(rf)) == ((315, 315), (32, 32), 126)


def test_mobilenetv2_final_layer(mobilenetv2):
    rf = receptive_field(mobilenetv2)
    assert rf.layer == "out_relu" and rf.size == (491, 491) and rf.stride == (32, 32)


@pytest.mark.slow
def test_distill_table_deeper_networks():
    cases = [("ResNet101", "conv5_block3_out", 224, 1027, 513),  # Slim: padding 511 (see above)
             ("InceptionResNetV2", "conv_7b_ac", 299, 3039, 1482)]
    for name, layer, size, want, pad in cases:
        model = getattr(keras.applications, name)(weights=None, include_top=False,
                                                  input_shape=(size, size, 3))
        rf = receptive_field(model, layer)
        assert (rf.size[0], rf.stride[0], padding(rf)) == (want, 32, pad), name


# --------------------------------------------------------------------------- analytic == numeric


def zoo(size):
    """Every layer kind with known geometry, strides and "same" padding at odd and even sizes."""
    inp = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inp)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    a = layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
    b = layers.SeparableConv2D(4, 5, padding="same")(x)
    x = layers.Add()([a, b])
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    x = layers.Conv2D(4, (3, 5), strides=(2, 1), padding="valid")(x)
    x = layers.Cropping2D(((1, 0), (0, 2)))(x)
    y = layers.AveragePooling2D(2, strides=1, padding="same")(x)
    x = layers.Concatenate()([x, y])
    x = layers.Dropout(0.2)(x)
    x = layers.Conv2D(4, 3, padding="same", name="last")(x)
    out = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name=f"zoo{size}")


def assert_boxes_match(model, layer, input_shape=None, cells=None):
    rf = receptive_field(model, layer, input_shape=input_shape)
    assert rf.method == "analytic"
    h, w = rf.output_shape
    cells = cells or [(0, 0), (h // 2, w // 2), (h - 1, w - 1)]
    for cell in cells:
        g = gradient_rf(model, cell, layer=layer, input_shape=input_shape)
        assert g.box == rf.clipped_box(cell), (model.name, layer, cell)
    return rf


@pytest.mark.parametrize("size", [61, 64, 67])
def test_zoo_analytic_matches_gradient_support(size):
    model = zoo(size)
    with unchanged(model):
        rf = assert_boxes_match(model, "last")
    assert rf.size[0] != rf.size[1]  # the 3×5 kernel and (2, 1) stride are kept per axis
    model = zoo(size + 80)
    rf = receptive_field(model, "last")
    numeric = receptive_field(model, "last", method="numeric")
    assert (numeric.size, numeric.stride, numeric.offset) == (rf.size, rf.stride, rf.offset)


def test_resnet50_final_layer_analytic_matches_gradient_support(resnet50_any_size):
    assert_boxes_match(resnet50_any_size, "conv5_block3_out", input_shape=(512, 512))


def test_inceptionv3_analytic_matches_gradient_support(inceptionv3_any_size):
    assert_boxes_match(inceptionv3_any_size, "mixed2", input_shape=(256, 256))


APPLICATIONS = [  # (name, kwargs, layer, input size where the field fits)
    ("VGG16", {}, "block5_pool", 256),
    ("MobileNet", {"alpha": 0.25}, "conv_pw_13_relu", 352),
    ("MobileNetV2", {"alpha": 0.35}, "out_relu", 512),
    ("MobileNetV3Small", {"alpha": 0.75}, None, 96),  # squeeze-excitation: sees everything
    ("Xception", {}, "block4_sepconv2_bn", 256),
]
SLOW_APPLICATIONS = [
    ("ResNet50V2", {}, "post_relu", 512),
    ("MobileNetV3Small", {"alpha": 0.75, "minimalistic": True}, None, 256),
    ("EfficientNetB0", {}, None, 96),
    ("DenseNet121", {}, "pool3_pool", 256),
]


def check_application(name, kwargs, layer, size):
    model = getattr(keras.applications, name)(weights=None, include_top=False,
                                              input_shape=(size, size, 3), **kwargs)
    rf = assert_boxes_match(model, layer)
    if name in ("EfficientNetB0", "MobileNetV3Small") and not kwargs.get("minimalistic"):
        assert rf.covers_input and rf.box((0, 0)) == (0, 0, size, size)


@pytest.mark.parametrize("name,kwargs,layer,size", APPLICATIONS, ids=[a[0] for a in APPLICATIONS])
def test_applications_analytic_matches_gradient_support(name, kwargs, layer, size):
    check_application(name, kwargs, layer, size)


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,layer,size", SLOW_APPLICATIONS,
                         ids=[a[0] for a in SLOW_APPLICATIONS])
def test_slow_applications_analytic_matches_gradient_support(name, kwargs, layer, size):
    check_application(name, kwargs, layer, size)


@pytest.mark.slow
@pytest.mark.parametrize("name,layer,size", [
    ("NASNetMobile", "normal_concat_5", 224), ("ConvNeXtTiny", "convnext_tiny_stage_1_block_2_identity", 256),
    ("InceptionResNetV2", "block35_10_ac", 299), ("DenseNet121", "relu", 96)])
def test_more_applications_analytic_matches_gradient_support(name, layer, size):
    model = getattr(keras.applications, name)(weights=None, include_top=False,
                                              input_shape=(size, size, 3))
    assert_boxes_match(model, layer)


# --------------------------------------------------------------------------- kinds of model


def test_nested_model_layers_have_their_standalone_geometry(nested):
    backbone = nested.layers[1]
    inner = "block_6_expand_relu"
    with unchanged(nested):
        rf = receptive_field(nested, f"{backbone.name}/{inner}")
    alone = receptive_field(backbone, inner)
    assert (rf.size, rf.stride, rf.offset) == (alone.size, alone.stride, alone.offset)
    assert rf.layer == f"{backbone.name}/{inner}" and rf.method == "analytic"
    assert receptive_field(nested).layer == f"{backbone.name}/out_relu"
    g = gradient_rf(nested, (1, 1), layer=f"{backbone.name}/{inner}")
    assert g.box == clip(rf.box((1, 1)), (64, 64))


def test_sequential_model_is_analytic():
    model = keras.Sequential([keras.Input((33, 33, 2)), layers.Conv2D(2, 3, strides=2),
                              layers.ReLU(), layers.Conv2D(2, 3, dilation_rate=2, name="c2")])
    with unchanged(model):
        rf = receptive_field(model)
    # 3×3/2 then a 3×3 conv dilated by 2 at stride 2: 3 + 2·4 = 11 pixels, stride 2, valid
    assert (rf.layer, rf.method, rf.size, rf.stride, rf.offset) == (
        "c2", "analytic", (11, 11), (2, 2), (5.0, 5.0))
    assert gradient_rf(model, (5, 6)).box == rf.box((5, 6)) == (10, 12, 21, 23)


def test_subclassed_model_is_measured_numerically(subclassed):
    with unchanged(subclassed):
        rf = receptive_field(subclassed, "block/conv")
        g = gradient_rf(subclassed, (10, 20), layer="block/conv")
    # stem 3×3 and block conv 3×3, "same": 5×5 around the cell
    assert (rf.method, rf.size, rf.stride, rf.offset) == ("numeric", (5, 5), (1, 1), (0.0, 0.0))
    assert g.box == (8, 18, 13, 23)
    with pytest.raises(ValueError, match="analytic"):
        receptive_field(subclassed, "block/conv", method="analytic")


class Blur(layers.Layer):
    """A custom layer of unknown geometry: a 3×3 box blur of each channel."""

    def call(self, x):
        return keras.ops.average_pool(x, 3, 1, "same")


def test_unknown_layer_makes_later_layers_numeric():
    inp = keras.Input((40, 40, 1))
    x = layers.Conv2D(2, 3, padding="same", name="before")(inp)
    x = Blur(name="blur")(x)
    x = layers.Conv2D(2, 3, padding="same", name="after")(x)
    model = keras.Model(inp, x)
    assert receptive_field(model, "before").method == "analytic"
    rf = receptive_field(model, "after")
    assert (rf.method, rf.size, rf.stride, rf.offset) == ("numeric", (7, 7), (1, 1), (0.0, 0.0))
    assert receptive_field(model) == rf  # the default is still the last spatial layer


def test_misaligned_branches_report_their_union():
    inp = keras.Input((20, 20, 1))
    shifted = layers.Cropping2D(((0, 1), (0, 1)))(layers.ZeroPadding2D(((1, 0), (1, 0)))(inp))
    x = layers.Add(name="merged")([inp, shifted])  # cell k sees pixels k and k - 1
    model = keras.Model(inp, x)
    rf = receptive_field(model, "merged")
    assert not rf.aligned and rf.size == (2, 2) and rf.offset == (-0.5, -0.5)
    assert gradient_rf(model, (5, 7), layer="merged").box == rf.box((5, 7)) == (4, 6, 6, 8)


def test_reach_leaves_out_pixels_a_valid_strided_conv_never_reads():
    inp = keras.Input((8, 9, 1))
    x = layers.Conv2D(1, 3, strides=2, padding="valid")(inp)  # reads rows 0..6, columns 0..8
    x = layers.Conv2D(1, 3, padding="same", name="same")(x)
    model = keras.Model(inp, x)
    rf = receptive_field(model, "same")
    assert rf.reach == (0, 0, 7, 9) and rf.output_shape == (3, 4)
    assert rf.box((2, 3)) == (2, 4, 9, 11) and rf.clipped_box((2, 3)) == (2, 4, 7, 9)
    assert gradient_rf(model, (2, 3), layer="same").box == (2, 4, 7, 9)


def test_upsampling_box_contains_the_gradient_support():
    inp = keras.Input((24, 24, 1))
    x = layers.Conv2D(1, 3, strides=2, padding="same")(inp)
    x = layers.UpSampling2D(2, name="up")(x)
    x = layers.Conv2D(1, 3, padding="same", name="after")(x)
    model = keras.Model(inp, x)
    rf = receptive_field(model, "after")
    assert rf.stride == (1, 1) and rf.method == "analytic"
    for cell in [(5, 5), (6, 7), (11, 12)]:
        t, l, b, r = gradient_rf(model, cell, layer="after").box
        bt, bl, bb, br = rf.box(cell)
        assert bt <= t and bl <= l and b <= bb and r <= br


def test_flat_layers_and_bad_arguments_are_refused(small):
    with pytest.raises(ValueError, match="no spatial output"):
        receptive_field(small, "gap")
    with pytest.raises(ValueError, match="did you mean"):
        receptive_field(small, "conv_3")
    with pytest.raises(TypeError, match="layer must be"):
        receptive_field(small, 3)
    with pytest.raises(ValueError, match="input_shape"):
        receptive_field(small, input_shape=(64, 64))
    with pytest.raises(ValueError, match="method"):
        receptive_field(small, method="exact")
    rf = receptive_field(small)
    with pytest.raises(TypeError, match="cell"):
        rf.box((1.5, 2))
    with pytest.raises(ValueError, match="outside"):
        gradient_rf(small, (8, 0))
    with pytest.raises(ValueError, match="shape"):
        gradient_rf(small, np.ones((4, 4)))
    with pytest.raises(ValueError, match="image"):
        gradient_rf(small, (1, 1), mode="effective")
    with pytest.raises(ValueError, match="image"):
        gradient_rf(small, "max")
    with pytest.raises(ValueError, match="mode"):
        gradient_rf(small, (1, 1), mode="exact")
    image = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        gradient_rf(small, (1, 1), image=image, mode="effective", target=99)


def test_receptive_field_is_frozen_and_exported(small):
    rf = receptive_field(small)
    assert isinstance(rf, ReceptiveField) and nbviz.receptive_field is receptive_field
    with pytest.raises(Exception):
        rf.size = (1, 1)
    # small_cnn: conv3, pool2, conv3, pool2, conv3 ("same"): 18 pixels, stride 4
    assert (rf.layer, rf.size, rf.stride, rf.output_shape) == ("conv3", (18, 18), (4, 4), (8, 8))


# --------------------------------------------------------------------------- gradient maps


def test_rf_mode_gradients_are_positive_on_relu_maxpool_networks(small):
    rf = receptive_field(small)
    with unchanged(small):
        g = gradient_rf(small, (4, 3))
    assert np.isfinite(g.map).all() and g.map.max() == 1.0 and g.map.dtype == np.float32
    top, left, bottom, right = rf.box((4, 3))
    assert g.box == (top, left, bottom, right)
    assert (g.map[top:bottom, left:right] > 0).all()  # no dead ReLU, no max-pool switch
    assert g.cell == (4, 3) and g.mode == "theoretical" and g.layer == "conv3"


def test_weighted_mask_covers_the_union_of_its_cells(small):
    rf = receptive_field(small)
    mask = np.zeros(rf.output_shape)
    mask[1, 2], mask[5, 6] = 1.0, 0.5
    g = gradient_rf(small, mask)
    a, b = rf.box((1, 2)), rf.box((5, 6))
    assert g.box == clip((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])),
                         (32, 32))
    assert g.cell is None
    whole = gradient_rf(small, np.ones(rf.output_shape))
    assert whole.box == (0, 0, 32, 32)


def test_effective_rf_and_max_cell(small):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
    p = probe(small)
    with unchanged(small):
        eff = gradient_rf(small, (3, 4), image=image, mode="effective")
        best = gradient_rf(small, "max", image=image, mode="effective", target=2)
    theo = receptive_field(small).box((3, 4))
    t, l, b, r = eff.box
    assert theo[0] <= t and theo[1] <= l and b <= theo[2] and r <= theo[3]
    with p.capture("conv3") as captured:
        p.forward(image[None])
    acts = captured["conv3"].numpy()[0, ..., 2]
    assert best.cell == tuple(int(v) for v in np.unravel_index(np.argmax(acts), acts.shape))
    assert np.isclose(eff.map.max(), 1.0) and eff.map.min() >= 0


def test_no_retracing_across_cells_masks_and_images(small):
    small = keras.models.clone_model(small)  # a fresh probe and cache
    p = probe(small)
    rng = np.random.default_rng(1)
    for i in range(4):
        gradient_rf(small, (i, 7 - i))
        gradient_rf(small, rng.uniform(0, 1, (8, 8)))
        image = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
        gradient_rf(small, (i, i), image=image, mode="effective", target=i)
        gradient_rf(small, "max", image=image)
    assert p.traces[("rf-theoretical", "conv3", (32, 32))] == 1
    assert p.traces[("rf-effective", "conv3", (32, 32))] == 1
    assert p.trace_count("rf-activations") == 1


def test_failures_leave_the_model_unchanged(small, nested, subclassed):
    for model in (small, nested, subclassed):
        with unchanged(model):
            with pytest.raises(ValueError):
                gradient_rf(model, (999, 0))
            with pytest.raises(ValueError):
                receptive_field(model, "no_such_layer")


# --------------------------------------------------------------------------- rf_grid


def test_rf_grid_data():
    model = seed_example()
    grid = rf_grid(model, "feature_grid")
    assert grid.cells == {"top_left": (0, 0), "center": (8, 8), "bottom_right": (15, 15)}
    assert grid.boxes["top_left"] == (0, 0, 34, 34)
    assert grid.boxes["center"] == (32, 32, 66, 66)
    assert grid.boxes["bottom_right"] == (60, 60, 94, 94)
    assert grid.centers.shape == (16, 16, 2)
    np.testing.assert_array_equal(grid.centers[2, 5], (16.5 + 8, 16.5 + 20))
