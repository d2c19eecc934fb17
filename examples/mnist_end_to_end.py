"""MNIST end to end through the Python API: train, harden, convert, sign, then load
the bundle as a device would and screen clean and adversarial digits.

    .venv/bin/python examples/mnist_end_to_end.py [OUT_DIR]

The same as `python -m edgeguard.converters.mnist` in a smaller configuration
(fewer epochs; about a minute on 2 cores).
"""
import sys

import numpy as np

import edgeguard
from edgeguard.converters import (AttackConfig, HardeningConfig, InputSpec, attack_images, convert, mnist_cnn,
                                  mnist_splits, train_clean)
from edgeguard.converters.hardening import deterministic

out = sys.argv[1] if len(sys.argv) > 1 else "out/mnist-example"
data = mnist_splits(seed=0)                      # fixed, stratified: train 3000 / calibration 1000 / test 1000
spec = InputSpec((1, 28, 28), "NCHW")            # uint8 pixels -> x / 255, no mean/std, labels "0".."9"

# 1. a source model (any torch.nn.Module works; here the embedded small CNN)
with deterministic(seed=0):
    model = mnist_cnn(width=16)
train_clean(model, spec, data["train"], epochs=6)

# 2. harden (fast FGSM with random start, eps 0.3), export, quantise, calibrate, sign, bundle
result = convert(model, spec, data["calibration"], data["test"], out_dir=out, name="mnist",
                 train=data["train"], hardening=HardeningConfig("fgsm", eps=0.3, epochs=5, lr_max=1e-2),
                 eval_attack=AttackConfig(eps=0.3, step=0.025, steps=20), key="generate")
print(open(result.report_text_path).read())

# 3. adversarial test digits against the hardened PyTorch model (white box), transferred
test = data["test"]
pgd = result.hardening_adversarial              # PGD eps 0.3 from the before/after evaluation
fgsm = attack_images(result.module, spec, test, "fgsm", eps=0.3)

# 4. the device side: verify the signature, load each artifact, predict and screen
for artifact in ("fp32-onnx", "int8-onnx", "int8-tflite"):
    guarded = edgeguard.load(result.bundle_path, public_key=result.public_key_path, artifact=artifact)
    clean = guarded.predict(test.x)
    row = [f"{artifact:12s} clean acc {np.mean(clean.indices == test.y):.3f}",
           f"FPR {np.mean(clean.is_adversarial):.3f}"]
    for name, adv in (("FGSM", fgsm), ("PGD", pgd)):
        r = guarded.predict(adv)
        fooled = (clean.indices == test.y) & (r.indices != test.y)
        row.append(f"{name} acc {np.mean(r.indices == test.y):.3f} detected {np.mean(r.is_adversarial[fooled]):.3f}")
    print("  ".join(row))
