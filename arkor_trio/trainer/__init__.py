"""Layer 3, the trainer: ``create_trainer`` / ``Trainer``, the serial dispatcher, ``Callbacks``, the
callback contexts, argument validation and a checkpoint's ``infer``.

The public names are re-exported from :mod:`arkor_trio`; the modules here are private.
"""
