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
  cli         the `pseudolabel` command, thin over the above
"""

import os as _os

# albumentations checks online for updates at import; this machine class is offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Keep TensorFlow's C++ start-up chatter out of CLI output unless the user asks for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
