"""The one builder of test manifests (plain dicts, as converters write them)."""

from __future__ import annotations


def artifact(id_, member, fmt="onnx", precision="fp32", *, threshold=0.5, qin=None, qout=None, target_fpr=0.05,
             rule="max_l1", n_legitimate=1000, data_sha256="ab" * 32) -> dict:
    """One artifact entry; ``threshold=None`` gives an artifact without a detector."""
    return {"id": id_, "member": member, "format": fmt, "precision": precision,
            "input_quantization": qin, "output_quantization": qout,
            "detector": None if threshold is None else {
                "threshold": threshold, "target_fpr": target_fpr, "rule": rule, "n_legitimate": n_legitimate,
                "data_sha256": data_sha256}}


def make_manifest(artifacts, *, name="tiny-cnn", version="1.0.0", labels=("cat", "dog"), layout="NCHW",
                  in_shape=(3, 2, 2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), value_range=(0, 1),
                  scale=1 / 255, squeezers=({"kind": "bit_depth", "bits": 4}, {"kind": "median", "size": 2}),
                  reference_stats=None, calibration_data_sha256="ef" * 32, tools=None, created_by="tests") -> dict:
    """A valid manifest; `in_shape` is (C, H, W) whatever the layout."""
    c, h, w = in_shape
    return {
        "name": name, "version": version, "created": "2025-01-31T12:00:00Z", "labels": list(labels),
        "input": {"shape": [None, c, h, w] if layout == "NCHW" else [None, h, w, c], "layout": layout,
                  "dtype": "float32", "range": list(value_range), "scale": scale, "mean": list(mean),
                  "std": list(std)},
        "output": {"kind": "logits"},
        "squeezers": [dict(s) for s in squeezers],
        "artifacts": list(artifacts),
        "reference_stats": {} if reference_stats is None else reference_stats,
        "provenance": {"source_model_sha256": "cd" * 32, "calibration_data_sha256": calibration_data_sha256,
                       "tools": dict(tools or {"tests": "1"}), "created_by": created_by},
    }
