"""Robustness evaluation of a bundle's artifacts through the device runtime, from Python.

    .venv/bin/python examples/evaluate_bundle.py out/mnist/mnist.egb out/mnist/mnist.pub [--quick]

The same as `edgeguard evaluate BUNDLE --public-key KEY`: the source model is found from
the `<name>.source.json` the converter wrote next to the bundle, the data is the MNIST
test split the bundle was built with. Then a few numbers are read from the report and the
detector is tried with another squeezer configuration through `GuardedModel.with_squeezers`.
"""
import sys

import numpy as np

import edgeguard
from edgeguard.converters import mnist_splits
from edgeguard.converters.calibrate import threshold_at_fpr
from edgeguard.converters.evaluation import EvalConfig, evaluate

bundle, public_key = sys.argv[1], sys.argv[2]
config = EvalConfig.quick() if "--quick" in sys.argv else EvalConfig(n_test=500, n_adaptive=300)
ev = evaluate(bundle, public_key, config=config, out_dir="out/evaluation", log=print)
print(ev.text)

# numbers from the JSON report (schema: docs/evaluation.md)
for aid, a in ev.report["artifacts"].items():
    pgd, adaptive = a["attacks"]["pgd"], a["attacks"]["adaptive"]
    print(f"{aid}: PGD accuracy {pgd['accuracy']:.1%}, detected {pgd['detection_rate']:.1%} of successful PGD, "
          f"adaptive undetected success {adaptive['undetected_success_rate']:.1%} "
          f"[{ev.report['threat_models'][adaptive['threat_model']][:60]}...]")

# the runtime hook: the same artifact with bit depth 1 only, its threshold from legitimate data
splits = mnist_splits()
model = edgeguard.load(bundle, public_key=public_key, artifact="int8-tflite")
bd1 = model.with_squeezers([{"kind": "bit_depth", "bits": 1}])
threshold = threshold_at_fpr(bd1.predict(splits["calibration"].x).scores, 0.05)
bd1 = model.with_squeezers([{"kind": "bit_depth", "bits": 1}], threshold)
fpr = np.mean(bd1.predict(splits["test"].x).is_adversarial)
print(f"bit depth 1 alone on int8-tflite: threshold {threshold:.4g}, test FPR {fpr:.1%}")
