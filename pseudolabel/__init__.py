"""pseudolabel: semi-supervised pseudo-labeling (Noisy Student) on TensorFlow/Keras.

One module per concern:
  images      read one image file robustly (Pillow): RGB, EXIF, size guards
  data        labeled sets, class maps, unlabeled pools, fixed splits
  pipeline    tf.data input pipelines (decode, resize, cache, batch, prefetch)
  augment     registered augmentation policies (albumentations)
  backbones   registered backbones with ImageNet weights, classifier factory, freezing
  evaluation  ROC AUC with bootstrap CIs, paired comparisons, TTA, plots
  training    supervised teacher (two-phase transfer learning), linear probe
  pseudolabels  teacher predictions on pools -> filtered, balanced pseudo-label table
  students    Noisy Student training (labeled + pseudo-labeled batches side by side)
  rounds      teacher -> label -> student -> ... experiments, resumable
  report      compare runs: tables, ROC plots, Markdown/HTML
  rundir      run directories: config, split hash, seeds, versions, atomic writes
  quiet       no TensorFlow banners or retracing warnings unless asked (`pseudolabel -v`)
  cli         the `pseudolabel` command, thin over the above
"""

import os as _os

from pseudolabel import quiet as _quiet

# albumentations checks online for updates at import; this machine class is offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# oneDNN's CPU kernels, unless the user chose: TensorFlow turns them on by itself only on CPUs with
# AVX-512 VNNI or newer; on AVX2 CPUs they labeled and trained much faster here (BENCHMARKS.md,
# "TensorFlow oneDNN off vs on"). Read when TensorFlow is imported, so set before it.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's C++ log level unless the user set one, and no start-up banners at its first import
# (the oneDNN one ignores the log level): the Python API is as quiet as the CLI (pseudolabel.quiet).
_quiet.quiet_tensorflow()

__version__ = "0.1.0"
