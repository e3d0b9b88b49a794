"""Ship a trained model: Hugging Face folders, ONNX and int8, latency, the web demo, serving.

Modules (each small, one job):
  card        the model card: YAML metadata and text whose every figure is a recorded one
  hf          `tinycats export hf`: the exported folder, and the push to the Hub
  onnx_run    onnxruntime sessions for both models: preprocessing, guided sampling loop
  quantize    static int8 quantisation calibrated on training photos, measured on test
  latency     p50/p95/p99 and throughput, PyTorch against onnxruntime, side by side
  web         `tinycats export web`: a static site running the ONNX models in the browser
  server      the FastAPI app behind `tinycats serve` and `tinycats cloud serve`

This layer sits between `cloud` and `train`: it imports train/models/data/storage,
never the CLI or Modal (the Modal endpoint wraps `server` from cloud/serve_app.py).
"""
