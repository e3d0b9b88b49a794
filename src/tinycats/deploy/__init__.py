"""Ship a trained model: Hugging Face folders, ONNX and int8, latency, the web demo, serving.

Modules (each small, one job):
  describe     what a consumer must know (preprocessing, prediction type, sampling defaults),
               written alike into config.json, the ONNX metadata and the web manifest
  folders      an export folder built beside its destination and renamed into place
  card         the model card: YAML metadata and text whose every figure is a recorded one
  hf           `tinycats export hf`: the exported folder, and the push to the Hub
  onnx_export  ONNX files of trained models, with their description
  onnx_run     onnxruntime sessions: the classifier's preprocessing, the DiT network as a
               stand-in the flow sampler drives
  quantize     static int8 quantisation calibrated on training photos, measured on test
  latency      p50/p95/p99 and throughput, PyTorch against onnxruntime, side by side
  noise        Gaussian noise that Python and the browser draw identically from a seed
  web          `tinycats export web`: a static site running the ONNX models in the browser
               (its pages and scripts are in site/)
  server       the FastAPI app behind `tinycats serve` and `tinycats cloud serve`

This layer sits between `cloud` and `train`: it imports train/models/data/storage,
never the CLI or Modal (the Modal endpoint wraps `server` from cloud/serve_app.py).
"""
