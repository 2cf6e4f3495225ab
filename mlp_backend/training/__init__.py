"""Training: the trainer, the epoch runner (eager or captured), run configuration and
presets, checkpoints and data-parallel training.

================  ====================================================================
``trainer``       :class:`Trainer`: the epoch loop, metrics, early stopping, progress
``runner``        the epoch runner: the same steps run eagerly or as one CUDA graph
``presets``       named configurations (the paper's and modern ones)
``run``           a training run from a config: build, train, write its files
``checkpoint``    save and load model, optimizer and trainer state
``distributed``   data-parallel training over MPI ranks
================  ====================================================================
"""
