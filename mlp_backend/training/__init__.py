"""Training: the trainer, the one training step and its epoch runner (eager or captured), run
configuration and presets, checkpoints and data-parallel training.

================  ====================================================================
``trainer``       :class:`Trainer`: the epoch loop, metrics, early stopping, progress
``step``          :class:`TrainingStep`: the one step (gather, forward, loss, backward, update)
``runner``        the epoch runner: the same step run eagerly or as one CUDA graph
``config``        the run configuration: options, defaults, presets resolved, validated
``presets``       named configurations (the paper's and modern ones) and the paper's quirks
``run``           a training run from a config: build, train, write its files
``checkpoint``    save and load model, optimizer and trainer state
``distributed``   one rank's part in data-parallel training over MPI
================  ====================================================================
"""
