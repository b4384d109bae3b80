"""The ONNX and ONNX Runtime layer every stage measures with: nothing here knows a recipe's stages.

export/ (PyTorch -> ONNX, parity-checked), quantize.py and precision.py (int8/int4/fp16 copies), providers.py
(one place makes every session), bench.py (latency), evaluate.py (accuracy of a file on task data),
graph_io.py and feeds.py (running a graph on texts or images), app_graph.py (the tokenizer inside the graph),
web_runtime.py (onnxruntime-web in headless Chromium), mobile.py (.ort, fixed shapes), profiles.py (target
profiles), environment.py (what a measurement ran on), executor.py (in process or as Ray tasks).
"""
