"""JobQueue: high before normal before low, users taking turns within a level, true 1-based positions."""

from __future__ import annotations

import random

import pytest

from cluster.protocol import Priority
from primary.queue import JobQueue
from tests.queue_model import QueueModel

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def _queue(pushes: list[tuple[str, Priority]]) -> tuple[JobQueue, list[int]]:
    queue = JobQueue()
    positions = [queue.push(job_id, priority) for job_id, priority in pushes]
    return queue, positions


def _drain(queue: JobQueue) -> list[str]:
    popped = []
    while (job_id := queue.pop()) is not None:
        popped.append(job_id)
    return popped


ORDER_CASES = [
    ([("a", N)], ["a"]),
    ([("a", N), ("b", N), ("c", N)], ["a", "b", "c"]),
    ([("a", L), ("b", N), ("c", H)], ["c", "b", "a"]),
    ([("l1", L), ("n1", N), ("h1", H), ("l2", L), ("n2", N), ("h2", H)], ["h1", "h2", "n1", "n2", "l1", "l2"]),
    ([("l1", L), ("l2", L), ("l3", L), ("h1", H)], ["h1", "l1", "l2", "l3"]),
]


@pytest.mark.parametrize(("pushes", "order"), ORDER_CASES)
def test_pop_order_is_priority_then_fifo(pushes: list[tuple[str, Priority]], order: list[str]) -> None:
    queue, _ = _queue(pushes)
    assert _drain(queue) == order
    assert len(queue) == 0


@pytest.mark.parametrize(("pushes", "order"), ORDER_CASES)
def test_position_matches_pop_order(pushes: list[tuple[str, Priority]], order: list[str]) -> None:
    queue, _ = _queue(pushes)
    assert [queue.position(job_id) for job_id in order] == list(range(1, len(order) + 1))


@pytest.mark.parametrize(("pushes", "positions"), [
    ([("a", N), ("b", N), ("c", N)], [1, 2, 3]),
    ([("a", N), ("b", H)], [1, 1]),
    ([("a", H), ("b", N)], [1, 2]),
    ([("a", L), ("b", N), ("c", H)], [1, 1, 1]),
    ([("l1", L), ("l2", L), ("n1", N)], [1, 2, 1]),
    ([("h1", H), ("n1", N), ("l1", L), ("h2", H), ("n2", N)], [1, 2, 3, 2, 4]),
])
def test_push_returns_true_position(pushes: list[tuple[str, Priority]], positions: list[int]) -> None:
    _, returned = _queue(pushes)
    assert returned == positions


def test_remove_shifts_positions_and_pop_skips_removed() -> None:
    queue, _ = _queue([("a", N), ("b", N), ("c", N), ("h", H)])
    assert queue.remove("b") is True
    assert "b" not in queue
    assert len(queue) == 3
    assert queue.position("c") == 3  # h, a, c
    assert _drain(queue) == ["h", "a", "c"]


@pytest.mark.parametrize("job_id", ["missing", "b"])
def test_remove_unknown_or_already_removed_returns_false(job_id: str) -> None:
    queue, _ = _queue([("a", N), ("b", N)])
    queue.remove("b")
    assert queue.remove(job_id) is False
    assert len(queue) == 1


def test_removed_job_can_be_pushed_again_at_the_back() -> None:
    queue, _ = _queue([("a", N), ("b", N)])
    queue.remove("a")
    assert queue.push("a", N) == 2
    assert _drain(queue) == ["b", "a"]


def test_pop_on_empty_returns_none() -> None:
    queue = JobQueue()
    assert queue.pop() is None
    queue.push("a", L)
    assert queue.pop() == "a"
    assert queue.pop() is None


@pytest.mark.parametrize(("first", "second", "order"), [
    (N, N, ["x", "a"]),
    (N, H, ["x", "a"]),
    (L, H, ["x", "a"]),
    (H, L, ["a", "x"]),
])
def test_duplicate_push_raises_and_leaves_queue_unchanged(first: Priority, second: Priority,
                                                          order: list[str]) -> None:
    queue, _ = _queue([("x", N), ("a", first)])
    with pytest.raises(ValueError, match="a is queued"):
        queue.push("a", second)
    assert len(queue) == 2
    assert _drain(queue) == order  # still at its first priority, not the second


def test_position_of_unknown_job_raises_key_error() -> None:
    queue, _ = _queue([("a", N)])
    with pytest.raises(KeyError):
        queue.position("nope")


@pytest.mark.parametrize(("pushes", "popped", "length", "inside", "outside"), [
    ([], 0, 0, [], ["a"]),
    ([("a", N)], 0, 1, ["a"], ["b"]),
    ([("a", N), ("b", H), ("c", L)], 0, 3, ["a", "b", "c"], ["d"]),
    ([("a", N), ("b", H), ("c", L)], 1, 2, ["a", "c"], ["b"]),
    ([("a", N), ("b", H), ("c", L)], 3, 0, [], ["a", "b", "c"]),
])
def test_len_and_contains(pushes: list[tuple[str, Priority]], popped: int, length: int,
                          inside: list[str], outside: list[str]) -> None:
    queue, _ = _queue(pushes)
    for _ in range(popped):
        queue.pop()
    assert len(queue) == length
    assert all(job_id in queue for job_id in inside)
    assert not any(job_id in queue for job_id in outside)


def test_every_position_stays_exact_through_pushes_pops_and_cancellations() -> None:
    """Against a plain list as the model, over a seeded mix of operations (positions without a walk)."""
    rng = random.Random(20261201)
    queue, model, serial = JobQueue(), [], 0
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.5 or not model:
            serial += 1
            priority = rng.choice(list(Priority))
            job_id = f"j{serial}"
            position = queue.push(job_id, priority)
            model.append((priority.rank, serial, job_id))
            model.sort()
            assert position == [m[2] for m in model].index(job_id) + 1
        elif roll < 0.75:
            assert queue.pop() == model.pop(0)[2]
        else:
            victim = rng.choice(model)
            model.remove(victim)
            assert queue.remove(victim[2])
        for index, (_rank, _serial, job_id) in enumerate(model):
            assert queue.position(job_id) == index + 1
    assert len(queue) == len(model)


# fair shares: users take turns within a level


def _fair(pushes: list[tuple[str, str]], priority: Priority = N) -> JobQueue:
    queue = JobQueue()
    for job_id, owner in pushes:
        queue.push(job_id, priority, owner, "resize")
    return queue


@pytest.mark.parametrize(("pushes", "order"), [
    ([("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")], ["a1", "b1", "a2", "a3"]),
    ([("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C")], ["a1", "b1", "c1", "a2", "b2"]),
    ([("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B")], ["a1", "b1", "a2", "b2"]),
])
def test_users_take_turns_within_a_level(pushes: list[tuple[str, str]], order: list[str]) -> None:
    queue = _fair(pushes)
    assert [queue.position(job_id) for job_id in order] == list(range(1, len(order) + 1))
    assert _drain(queue) == order


def test_a_light_user_waits_for_one_job_of_the_heavy_one_not_for_all() -> None:
    queue = _fair([(f"a{n}", "A") for n in range(1, 1001)])
    assert queue.pop() == "a1"  # running
    assert queue.push("b1", N, "B", "resize") == 2  # behind a2 only
    assert [queue.pop(), queue.pop(), queue.pop()] == ["a2", "b1", "a3"]


def test_a_user_who_just_had_a_turn_goes_behind_one_who_joins() -> None:
    queue = _fair([("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")])
    assert queue.pop() == "a1"  # ring: B, A
    queue.push("c1", N, "C", "resize")  # ring: B, A, C
    assert _drain(queue) == ["b1", "a2", "c1", "b2"]


def test_priority_levels_still_come_first_and_each_has_its_own_turns() -> None:
    queue = JobQueue()
    for job_id, owner, priority in [("a1", "A", N), ("a2", "A", N), ("b1", "B", L), ("b2", "B", N), ("c1", "C", H)]:
        queue.push(job_id, priority, owner, "resize")
    assert _drain(queue) == ["c1", "a1", "b2", "a2", "b1"]


def test_a_cancellation_moves_the_users_later_jobs_up_a_turn() -> None:
    queue = _fair([("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B"), ("b3", "B")])
    assert queue.position("a3") == 5
    queue.remove("a2")
    assert queue.position("a3") == 3  # a1 b1 a3 b2 b3
    assert _drain(queue) == ["a1", "b1", "a3", "b2", "b3"]


def test_a_blocked_type_is_skipped_and_its_jobs_keep_their_place() -> None:
    queue = JobQueue()
    for job_id, owner, job_type in [("h1", "A", "hls"), ("r1", "A", "resize"), ("h2", "B", "hls"),
                                    ("r2", "B", "resize")]:
        queue.push(job_id, N, owner, job_type)
    assert queue.waiting("hls") == 2
    assert queue.pop({"hls"}) == "r1"  # A's oldest job not blocked: A had its turn
    assert queue.pop({"hls"}) == "r2"
    assert queue.pop({"hls"}) is None
    assert queue.position("h1") == 1
    assert _drain(queue) == ["h1", "h2"]
    assert queue.waiting("hls") == 0


def test_positions_match_the_pop_order_of_a_naive_model() -> None:
    """A seeded mix of pushes by several users at every priority, pops (some with a type blocked) and
    cancellations: after each step, every position equals the place the model's pops would give."""
    rng = random.Random(20261201)
    queue, model, serial = JobQueue(), QueueModel(), 0
    users, types = ["A", "B", "C", "D"], ["resize", "hls", "convert"]
    for _ in range(2500):
        roll = rng.random()
        queued = model.jobs()
        if roll < 0.5 or not queued:
            serial += 1
            job_id, priority = f"j{serial}", rng.choice(list(Priority))
            owner, job_type = rng.choice(users), rng.choice(types)
            position = queue.push(job_id, priority, owner, job_type)
            model.push(job_id, priority, owner, job_type)
            assert position == model.order().index(job_id) + 1
        elif roll < 0.75:
            blocked = frozenset(rng.sample(types, rng.choice([0, 0, 1, 2])))
            assert queue.pop(blocked) == model.pop(blocked)
        else:
            victim = rng.choice(queued)
            model.remove(victim)
            assert queue.remove(victim)
        for index, job_id in enumerate(model.order()):
            assert queue.position(job_id) == index + 1
        assert all(queue.waiting(t) == sum(1 for lv in model.levels.values() for _, q in lv for _, jt in q
                                           if jt == t) for t in types)
    assert len(queue) == len(model.jobs())
