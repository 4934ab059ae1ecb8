"""The GPEN network and everything about its weight files.

- ``network``: the network (encoder + StyleGAN2 generator), names matching the released checkpoints;
- ``files``: reading ``.pth``/``.safetensors`` safely, unwrapping containers;
- ``checkpoint``: config inference from tensor shapes, tensor checks, building the network;
- ``layouts``: the released checkpoints' tensor layouts and seeded weights in them;
- ``onnx_graph`` / ``onnx_mapping`` / ``onnx_runtime`` / ``onnx_loading``: ``.onnx`` files (reading
  graphs and their constants, mapping weights back to the state dict, the onnxruntime runner,
  choosing between the two at load time);
- ``loader``: :func:`load_model` for any of them.
"""
