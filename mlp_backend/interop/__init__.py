"""Other libraries' doors: the scikit-learn estimator and the ONNX exporter.

================  ====================================================================
``estimator``     :class:`MLPClassifier`, a scikit-learn estimator around :class:`~mlp_backend.MLP`
``onnx_export``   a trained model as an ONNX graph
================  ====================================================================
"""
