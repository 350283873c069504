"""Adversarially trained ResNet-20 on the embedded UCI digits (Madry et al. 2018): each
training batch is replaced by PGD inputs in the L-inf ball of radius `eps` around it.

    python run.py train  --config configs/digits_resnet_adv.py --workdir runs/digits_resnet_adv
    python run.py attack --workdir runs/digits_resnet_adv      # robust accuracy per budget
    python run.py train  --config configs/digits_resnet_adv.py:adversarial=fgsm_rs ...  # 2x cheaper

The recipe of configs/digits_resnet.py (`digits_resnet_config` in configs/common.py) plus
`task.adversarial`. PGD-3 costs about 4x a plain step (three attack
gradients, then the update). `eval/adv/*` reports clean and PGD-10 robust accuracy on the
test split at the end of training. `:runlocal` is a 60-step smoke run.
"""
from configs.common import digits_resnet_config, evaluator, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False, adversarial="pgd", eps=0.1, steps=3)
    c = digits_resnet_config(args.runlocal)
    c.task.input_range = (-1.0, 1.0)    # what to_float(-1, 1) feeds: attacks stay inside
    c.task.adversarial = args.adversarial  # pgd | fgsm_rs | "" (plain training)
    c.task.adv_norm = "linf"
    c.task.adv_eps = args.eps            # 0.1 = 5% of the input range per pixel
    c.task.adv_steps = args.steps        # pgd only
    c.task.adv_step_size = 0.0           # 0 = 2.5 / steps (pgd), 1.25 (fgsm_rs), times eps

    # Clean and robust accuracy at the end (every=0 and train.eval_every would run it at each
    # eval; PGD-10 over the test split costs ~40 eval passes).
    c.evals.adv = evaluator("adversarial", norm="linf", budgets=(0.05, 0.1, 0.2), steps=10,
                            every=c.train.steps)

    if args.runlocal:
        c.evals.adv.every = 60
        c.evals.adv.max_batches = 1
    return c
