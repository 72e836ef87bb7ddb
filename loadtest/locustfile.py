"""Locust users for people who prefer Locust: `locust -f loadtest/locustfile.py --host http://127.0.0.1:8000`.

Each user asks eval-split questions with a budget drawn from LOCUST_BUDGETS_MS (comma-separated,
default 100,200,400) and marks a response as failed when it is not a 200 within its budget.
Locust's users are a closed loop; loadtest/scenarios.py is the open-loop measurement.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import HttpUser, between, task

from models.data import squad

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad" / "eval.json.gz"
EXAMPLES = squad.load_squad(DATA)
BUDGETS = [float(b) for b in os.environ.get("LOCUST_BUDGETS_MS", "100,200,400").split(",")]


class Asker(HttpUser):
    wait_time = between(0.05, 0.2)

    @task
    def ask(self) -> None:
        example = random.choice(EXAMPLES)
        budget = random.choice(BUDGETS)
        with self.client.post(
            "/v1/qa",
            json={"question": example.question, "context": example.context},
            headers={"X-Latency-Budget-Ms": str(budget)},
            name=f"/v1/qa budget={budget:g}ms",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif not response.json()["budget_met"]:
                response.failure("budget missed")
