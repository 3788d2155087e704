"""SPOS evolutionary search (Guo et al., 2020): population, top-k, mutation, crossover, all under a
FLOPs limit; or, with ``strategy="random"``, random search with weight sharing (Li and Talwalkar, 2019): every
generation uniformly random feasible candidates, as many as evolution scores, the best kept - the baseline an
evolution has to beat at equal cost (its first generation is evolution's own). Pure Python over candidate
tuples; the caller supplies the fitness function. The RNG is seeded and the state is a plain dict (a
candidate's score under its ``candidate_key``), so every rank runs the same search and a killed search resumes
from its last finished generation."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

Candidate = tuple[int, ...]


def candidate_key(c: Sequence[int]) -> str:
    """How a candidate is written in the state's ``scores`` (JSON keys are strings)."""
    return ",".join(map(str, c))


def key_candidate(key: str) -> Candidate:
    return tuple(int(v) for v in key.split(","))


def first_generation(state: dict[str, Any]) -> list[Candidate]:
    """The first generation's candidates (uniformly random under the limit): scores are kept in scoring order."""
    return [key_candidate(k) for k in list(state["scores"])[: state["history"][0]["evaluated"]]]


class EvolutionSearch:
    def __init__(self, num_choices: Sequence[int], cost: Callable[[Candidate], float], max_cost: float | None,
                 population: int = 20, generations: int = 5, top_k: int = 5, mutation_prob: float = 0.1,
                 mutation_count: int | None = None, crossover_count: int | None = None, seed: int = 0,
                 max_tries: int = 10_000, strategy: str = "evolution") -> None:
        if strategy not in ("evolution", "random"):
            raise ValueError(f"Unknown search strategy '{strategy}': choose evolution or random.")
        self.strategy = strategy
        self.num_choices, self.cost, self.max_cost = list(num_choices), cost, max_cost
        self.population_size, self.generations, self.top_k = population, generations, top_k
        self.mutation_prob = mutation_prob
        self.mutation_count = population // 2 if mutation_count is None else mutation_count
        self.crossover_count = population // 2 if crossover_count is None else crossover_count
        self.seed, self.max_tries = seed, max_tries
        self.state: dict[str, Any] = {"generation": 0, "scores": {}, "top": [], "history": []}

    def feasible(self, c: Candidate) -> bool:
        return self.max_cost is None or self.cost(c) <= self.max_cost

    def _rng(self, generation: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + generation)

    def _collect(self, make: Callable[[], Candidate], count: int, seen: set[Candidate]) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(self.max_tries):
            if len(out) >= count:
                break
            c = make()
            if c not in seen and self.feasible(c):
                seen.add(c)
                out.append(c)
        return out

    def propose(self, generation: int) -> list[Candidate]:
        rng = self._rng(generation)
        seen = {key_candidate(k) for k in self.state["scores"]}
        random_candidate = lambda: tuple(rng.randrange(n) for n in self.num_choices)  # noqa: E731
        if generation == 0 or not self.state["top"] or self.strategy == "random":
            cands = self._collect(random_candidate, self.population_size, seen)
            if not cands:
                raise ValueError(f"No candidate within the FLOPs limit {self.max_cost} found in {self.max_tries} "
                                 f"random draws: raise the limit (the smallest path costs more).")
            return cands
        top = [tuple(c) for c in self.state["top"]]

        def mutate() -> Candidate:
            parent = rng.choice(top)
            return tuple(rng.randrange(n) if rng.random() < self.mutation_prob else v
                         for v, n in zip(parent, self.num_choices))

        def crossover() -> Candidate:
            a, b = rng.choice(top), rng.choice(top)
            return tuple(rng.choice(pair) for pair in zip(a, b))

        cands = self._collect(mutate, self.mutation_count, seen)
        cands += self._collect(crossover, self.crossover_count, seen)
        cands += self._collect(random_candidate, self.population_size - len(cands), seen)
        return cands

    def run(self, fitness: Callable[[Candidate], float],
            on_generation: Callable[[dict[str, Any]], None] | None = None) -> Candidate:
        """Evolve from the current state; ``on_generation`` gets the state after each generation."""
        while self.state["generation"] < self.generations:
            g = self.state["generation"]
            proposals = self.propose(g)
            if not proposals:  # every feasible candidate has been scored: nothing left to try
                self.state["generation"] = self.generations
                self.state["exhausted"] = True
                if on_generation is not None:
                    on_generation(self.state)
                break
            scores = {c: fitness(c) for c in proposals}
            for c, s in scores.items():
                self.state["scores"][candidate_key(c)] = s
            ranked = sorted(self.state["scores"].items(), key=lambda kv: (-kv[1], kv[0]))
            self.state["top"] = [list(key_candidate(k)) for k, _ in ranked[: self.top_k]]
            self.state["history"].append({"generation": g, "best": ranked[0][1],
                                          "mean": sum(scores.values()) / max(1, len(scores)),
                                          "evaluated": len(scores), "best_candidate": self.state["top"][0]})
            self.state["generation"] = g + 1
            if on_generation is not None:
                on_generation(self.state)
        return tuple(self.state["top"][0])
