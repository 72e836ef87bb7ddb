"""The frontier search: monotone sampling, Pareto filtering, a resumable seeded study."""

from pathlib import Path

import optuna

from models import checkpoint, search, squad
from models.reader import Reader
from models.subnet import SubnetConfig
from tests.conftest import DATA


def test_sampled_lengths_are_non_increasing_and_fit_the_depth() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        subnet = search.subnet_from_trial(trial, 6)
        subnet.check_layers(6)
        if subnet.lengths:
            assert all(a >= b for a, b in zip(subnet.lengths, subnet.lengths[1:]))
        study.tell(trial, [0.0, 0.0])


def test_pareto_front_keeps_only_non_dominated() -> None:
    m = search.Measurement
    a, b, c = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    front = search.pareto_front([m(a, 80, 70, 50, 1), m(b, 70, 60, 60, 1), m(c, 60, 50, 10, 1)])
    assert [x.subnet for x in front] == [c, a]


def test_study_is_seeded_and_resumes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    reader = Reader(checkpoint.load(tiny_checkpoint))
    bench = search.Bench(reader, squad.load_squad(DATA / "eval.json.gz", limit=5))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    first = len(search.run_study(bench, 3, storage, seed=1, name="t", progress=False).trials)
    again = search.run_study(bench, 5, storage, seed=1, name="t", progress=False)  # continues, 2 more
    assert first == 3 and len(again.trials) == 5
    assert search.front_from_study(again, bench)
