"""What a user runs: the command line, the drawing server and the plots.

================  ====================================================================
``cli``           ``mlp-backend``: its commands and their one-line errors
``cli_names``     option values accepted in either spelling (cross-entropy, cross_entropy)
``exit_codes``    the exit codes, in one place
``launch``        ``train --ranks N``: the command rerun as an ``mpiexec -n N`` job
``serve``         ``mlp-backend serve``: a page to draw a digit and see the prediction
``plots``         loss and accuracy curves, confusion matrices, misclassified digits
================  ====================================================================
"""
