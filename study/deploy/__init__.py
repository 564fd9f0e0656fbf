"""srstudy.deploy: from a trained network to numbers on the edge.

    onnx.py      the ONNX graph: export, fp16 wrapper, graph stats, reading a file back
    runtime.py   which runtime runs it: onnxruntime sessions/providers, TensorRT engines
    export.py    parity with PyTorch, latency comparison, ExportReport, export(), log_export
    sources.py   where the network comes from: an MLflow run, the study's best run, a checkpoint
    bench.py     the edge benchmark: BenchResult, run_benchmark, the Ray task on the `jetson` node

Import the modules themselves (`from srstudy.deploy.export import export`); this package
re-exports nothing. It may import analysis, measure, data, models, workdir and objectives;
nothing below it imports deploy.
"""
