"""The MNIST job's hardened-vs-undefended comparison (edgeguard.converters.mnist, step 7), on
constructed evaluation reports with known figures."""

from __future__ import annotations

from edgeguard.converters import mnist


def _metrics(undetected, detected, n_succ, fpr, acc):
    return {"undetected_success_rate": undetected, "detection_rate": detected, "n_successful": n_succ,
            "false_positive_rate": fpr, "accuracy": acc}


def test_comparison_rows_put_undetected_success_first_for_both_models():
    hardened = {"artifacts": {"int8-onnx": {"attacks": {"fgsm": _metrics(0.023, 0.699, 73, 0.056, 0.894),
                                                        "square": _metrics(0.01, 0.9, 10, 0.056, 0.87)}},
                              "fp32-tflite": {"attacks": {"fgsm": _metrics(0.02, 0.7, 70, 0.05, 0.9)}}}}
    undefended = {"artifacts": {"int8-onnx": {"attacks": {"fgsm": _metrics(0.077, 0.913, 851, 0.032, 0.114),
                                                          "pgd": _metrics(0.054, 0.946, 965, 0.032, 0.0)}}}}
    rows = mnist.comparison_rows(hardened, undefended)
    # only artifacts and white-box attacks evaluated on both sides
    assert rows == [["int8-onnx", "FGSM", "2.3%", "69.9% (73)", "5.6%", "89.4%", "7.7%", "91.3% (851)", "3.2%",
                     "11.4%"]]
    assert mnist.COMPARISON_HEADER[2] == "H undetected succ" and mnist.COMPARISON_HEADER[6] == "U undetected succ"
