"""The search space: sampled sub-networks fit the depth, lengths never grow."""

import optuna

from models.search import space


def test_sampled_lengths_are_non_increasing_and_fit_the_depth() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        subnet = space.subnet_from_trial(trial, 6)
        subnet.check_layers(6)
        if subnet.lengths:
            assert all(a >= b for a, b in zip(subnet.lengths, subnet.lengths[1:]))
        study.tell(trial, [0.0, 0.0])
