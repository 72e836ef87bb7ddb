"""A few hand-written questions about boxes on a shelf, tokenised once with the real tokenizer."""

from pathlib import Path

import pytest

from models.data import squad

EXAMPLES = [
    squad.SquadExample(str(i), f"what is item {i}?", f"Item {i} is a {c} box. It sits on a shelf.", (f"{c} box",), (0,))
    for i, c in enumerate(["red", "blue", "green", "small", "large", "old", "new", "wooden"])
]


@pytest.fixture(scope="session")
def tiny_windows(base_dir: Path) -> squad.Windows:
    """EXAMPLES as labelled training windows (96 tokens, stride 16); read-only."""
    examples = [
        squad.SquadExample(e.qid, e.question, e.context, e.answers, (e.context.index(e.answers[0]),)) for e in EXAMPLES
    ]
    return squad.encode(squad.load_tokenizer(base_dir), examples, 96, 16, with_labels=True)
