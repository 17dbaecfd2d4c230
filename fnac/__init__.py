"""FNAC sound-source localization: the torch-free package (media decoding, the ONNX runtime, post-processing
and the localization pipeline shared by the HTTP service, the CLI and the Python API)."""
