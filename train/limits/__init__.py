"""Measuring where deep learning breaks: adversarial attacks and input attributions.

Pure JAX functions of `logits_fn(x) -> logits` (B, C) and a batch, with no knowledge of the
loop, so one implementation serves the `adversarial` evaluator, the `attack` and `explain`
verbs and adversarial training in the classification task:

    attacks.py       FGSM, PGD in L-inf and L2 balls (random start, restarts), robust accuracy
    attributions.py  vanilla gradients, SmoothGrad, Integrated Gradients
"""
