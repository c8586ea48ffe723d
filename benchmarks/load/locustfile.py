"""Load on `thaw serve` with Locust: the traffic of a site whose users are mostly new.

Four kinds of client, by weight:

- ``NewUser`` (5): a visitor never seen; rates a few items (POST /v1/events, one or two per
  batch), asks for recommendations after each (GET /v1/users/{id}/recommendations), and
  sometimes for an explored slate, whose first slot it rewards (POST /v1/feedback).
- ``KnownUser`` (3): one of the data set's users asks for recommendations.
- ``Anonymous`` (1): a profile and a short history inline (POST /v1/recommendations).
- ``Catalogue`` (1): an editor adds a new item now and then (PUT /v1/items/{id}).

Items and users are ML-100k's raw ids (1..1682, 1..943) unless --items-prefix/--n-items and
--users-prefix/--n-users say otherwise (the synthetic stack: i0..i199, u0..u299). Every
random choice comes from a generator seeded by the client's number (--load-seed).

    locust -f benchmarks/load/locustfile.py --headless -u 32 -r 8 -t 60s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools
import random

from locust import HttpUser, between, events, task

_numbers = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser):  # noqa: ANN001 - Locust's parser
    parser.add_argument("--items-prefix", default="", help="raw item ids are PREFIX + number")
    parser.add_argument("--n-items", type=int, default=1682)
    parser.add_argument("--first-item", type=int, default=1)
    parser.add_argument("--users-prefix", default="")
    parser.add_argument("--n-users", type=int, default=943)
    parser.add_argument("--first-user", type=int, default=1)
    parser.add_argument("--load-seed", type=int, default=0)


class Client(HttpUser):
    abstract = True
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.number = next(_numbers)
        self.rng = random.Random(options.load_seed * 1_000_003 + self.number)
        self.items = [f"{options.items_prefix}{options.first_item + k}" for k in range(options.n_items)]
        self.users = [f"{options.users_prefix}{options.first_user + k}" for k in range(options.n_users)]

    def recommend(self, user: str, **params: str) -> dict:
        query = "&".join(f"{k}={v}" for k, v in {"n": "10", **params}.items())
        with self.client.get(f"/v1/users/{user}/recommendations?{query}",
                             name="/v1/users/[id]/recommendations" + ("?explore" if params else ""),
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return {}
            return response.json()


class NewUser(Client):
    weight = 5

    def on_start(self) -> None:
        super().on_start()
        self.user = f"load-{self.environment.parsed_options.load_seed}-{self.number}-{self.rng.getrandbits(32):08x}"
        self.seen: list[str] = []

    @task(4)
    def rate_then_ask(self) -> None:
        batch = []
        for _ in range(self.rng.choice((1, 1, 2))):
            item = self.rng.choice(self.items)
            batch.append({"event_id": f"{self.user}-{len(self.seen)}", "user": self.user, "item": item,
                          "rating": self.rng.choice((3, 4, 5)), "kind": "rating", "ts": len(self.seen)})
            self.seen.append(item)
        self.client.post("/v1/events", json={"events": batch})
        self.recommend(self.user)

    @task(1)
    def explore_and_reward(self) -> None:
        slate = self.recommend(self.user, explore="true")
        if slate.get("slate_id"):
            first = slate["items"][0]["item"]
            self.client.post("/v1/feedback", json={"slate_id": slate["slate_id"], "item": first,
                                                   "reward": float(self.rng.random() < 0.3)})


class KnownUser(Client):
    weight = 3

    @task
    def ask(self) -> None:
        self.recommend(self.rng.choice(self.users))


class Anonymous(Client):
    weight = 1

    @task
    def ask_inline(self) -> None:
        history = [{"item": self.rng.choice(self.items), "rating": 5} for _ in range(self.rng.randint(0, 3))]
        profile = {"gender": self.rng.choice("MF"), "age": self.rng.randint(18, 70)}
        self.client.post("/v1/recommendations", json={"profile": profile, "history": history, "n": 10})


class Catalogue(Client):
    weight = 1
    wait_time = between(1.0, 3.0)

    @task
    def add_item(self) -> None:
        item = f"new-{self.environment.parsed_options.load_seed}-{self.number}-{self.rng.getrandbits(32):08x}"
        self.client.put(f"/v1/items/{item}", name="/v1/items/[id]",
                        json={"features": {"title": f"A New Film {item[-4:]}", "genres": ["Drama"], "year": 1998}})
