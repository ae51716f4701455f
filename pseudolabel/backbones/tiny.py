"""`tiny_cnn`: a few-thousand-parameter conv net for fast tests and the demo.

It has no pretrained weights and accepts any resolution >= 16. Its layers follow the EfficientNet
naming (`stem_*`, `block{N}a_*`, `top_*`), and block 3 has an identity skip with stochastic depth
(`block3a_drop`), so the freezing helpers and the noise knobs behave exactly as on the real
backbones.
"""

from __future__ import annotations

import keras
from keras import layers

FEATURE_DIM = 64
_NUM_BLOCKS = 3


def _conv_bn_act(x, filters, kernel, strides, prefix, *, depthwise=False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                   name=f"{prefix}dwconv")(x)
        x = layers.BatchNormalization(name=f"{prefix}bn")(x)
        x = layers.Activation("relu6", name=f"{prefix}activation")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}project_conv")(x)
        return layers.BatchNormalization(name=f"{prefix}project_bn")(x)
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{prefix}conv")(x)
    x = layers.BatchNormalization(name=f"{prefix}bn")(x)
    return layers.Activation("relu6", name=f"{prefix}activation")(x)


def build_tiny_cnn(image_size: int, drop_connect_rate: float) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    x = _conv_bn_act(x, 8, 3, 2, "stem_")
    x = _conv_bn_act(x, 16, 3, 2, "block1a_")
    x = _conv_bn_act(x, 32, 3, 2, "block2a_", depthwise=True)
    shortcut = x
    x = _conv_bn_act(x, 32, 3, 1, "block3a_", depthwise=True)
    # Stochastic depth rises linearly with the block index, as in EfficientNet (block 3 of 3).
    rate = drop_connect_rate * 2 / _NUM_BLOCKS
    x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name="block3a_drop")(x)
    x = layers.Add(name="block3a_add")([x, shortcut])
    x = layers.Conv2D(FEATURE_DIM, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Activation("relu6", name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="backbone")
