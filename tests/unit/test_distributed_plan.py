"""The pure parts of spreading an experiment over Ray nodes (no cluster here; the integration
tests run a real one): the ``--ray`` value, node labels, placement, which node runs which
block of a round, and the row a node's request becomes in the driver's run."""

from __future__ import annotations

import pytest

from servelab.errors import EnvironmentProblem, UsageError
from servelab.records import Observation, Outcome, Phase
from servelab.runner.distributed.cluster import RayNode, parse_target, worker_nodes
from servelab.runner.distributed.spread import assign_round, placement_nodes, with_node
from servelab.spec.experiment import ExperimentSpec
from servelab.spec.schedule import plan_blocks
from servelab.store.request_row import RowContext, build_row


def test_the_ray_value_is_a_local_cluster_or_an_address() -> None:
    assert parse_target("local:2").local == 2 and parse_target("local:2").address is None
    assert parse_target("10.0.0.5:6379").address == "10.0.0.5:6379"
    assert parse_target("auto").local == 0
    for bad, fix in (("local:0", "1 to 8 nodes"), ("local:x", "give local:N"), ("", "local:N")):
        with pytest.raises(UsageError, match=fix):
            parse_target(bad)


def node(nid: str, resources: dict[str, float], ip: str = "127.0.0.1", alive: bool = True
         ) -> dict[str, object]:  # fmt: skip
    return {"NodeID": nid, "Alive": alive, "NodeManagerAddress": ip, "Resources": resources}


def test_worker_nodes_are_the_live_nodes_with_cpus_labelled_by_their_resource() -> None:
    listed = [
        node("c", {"CPU": 1.0, "servelab_n1": 1.0}),
        node("a", {"node:__internal_head__": 1.0, "memory": 1.0}),  # the head: no CPU
        node("b", {"CPU": 1.0, "servelab_n0": 1.0}),
        node("d", {"CPU": 4.0, "h100": 1.0}, ip="10.0.0.7"),
        node("e", {"CPU": 4.0, "h100": 1.0}, ip="10.0.0.8"),
        node("f", {"CPU": 2.0}, ip="10.0.0.9"),
        node("g", {"CPU": 2.0, "servelab_n2": 1.0}, alive=False),
    ]
    nodes = worker_nodes(listed)
    assert [(n.label, n.node_id) for n in nodes] == [
        ("n0", "b"), ("n1", "c"), ("h100", "d"), ("h100-2", "e"), ("10.0.0.9", "f"),
    ]  # fmt: skip
    assert nodes[0].pin == "servelab_n0" and nodes[4].pin == "node:10.0.0.9"
    assert nodes[2].matches("h100") and nodes[3].matches("h100") and nodes[3].matches("h100-2")


def two_nodes() -> list[RayNode]:
    return [RayNode("n0", "a", "127.0.0.1", {"CPU": 1.0, "servelab_n0": 1.0, "big": 1.0}),
            RayNode("n1", "b", "127.0.0.1", {"CPU": 1.0, "servelab_n1": 1.0})]  # fmt: skip


def test_placement_restricts_arms_by_label_or_resource_and_names_a_miss() -> None:
    nodes = two_nodes()
    allowed = placement_nodes(["a", "b", "c"], {"a": ("n1",), "b": ("big",)}, nodes)
    assert {arm: [n.label for n in ns] for arm, ns in allowed.items()} == {
        "a": ["n1"], "b": ["n0"], "c": ["n0", "n1"],
    }  # fmt: skip
    with pytest.raises(UsageError, match=r"arm 'a' may run on gpu, but no node .* n0, n1"):
        placement_nodes(["a"], {"a": ("gpu",)}, nodes)


def test_each_round_puts_every_arm_on_another_node_so_arms_visit_every_node() -> None:
    nodes = two_nodes()
    allowed = placement_nodes(["a", "b"], {}, nodes)
    plan = plan_blocks(["a", "b"], 4, (1,))
    seen = []
    for r in range(4):
        blocks = [bp for bp in plan if bp.block == r]
        where = assign_round(blocks, allowed, ["n0", "n1"], r)
        assert sorted(len(v) for v in where.values()) == [1, 1]  # side by side
        seen.append({bp.arm: label for label, bps in where.items() for bp in bps})
    assert seen == [{"a": "n0", "b": "n1"}, {"a": "n1", "b": "n0"}] * 2


def test_a_lost_node_s_blocks_go_to_the_nodes_left_and_an_arm_with_none_is_an_error() -> None:
    nodes = two_nodes()
    allowed = placement_nodes(["a", "b"], {"b": ("n1",)}, nodes)
    blocks = [bp for bp in plan_blocks(["a", "b"], 1, (1,))]
    assert assign_round(blocks[:1], allowed, ["n0"], 0) == {"n0": blocks[:1]}
    with pytest.raises(EnvironmentProblem, match=r"no live node may run arm 'b'.*servelab resume"):
        assign_round(blocks, allowed, ["n0"], 0)


def test_a_node_s_row_gets_the_driver_s_seq_its_node_and_a_unique_warmup_id() -> None:
    obs = Observation(outcome=Outcome.OK, wait_s=0.0, end_s=0.5)
    ctx = RowContext(run_id="r", arm="a", block=1, phase=Phase.WARMUP, seq=0, prompt_id="p",
                     concurrency=1, t_send_unix_s=1.0, request_id="w1/a/0")  # fmt: skip
    row = with_node(build_row(obs, ctx), "n1", 17)
    keys = list(row)
    assert row["seq"] == 17 and row["node"] == "n1" and row["request_id"] == "n1:w1/a/0"
    assert keys.index("node") == keys.index("request_id") + 1
    trial = build_row(obs, RowContext(run_id="r", arm="a", block=1, phase=Phase.TRIAL, seq=3,
                                      prompt_id="p", concurrency=1, t_send_unix_s=1.0,
                                      request_id="b1/a/c1/0"))  # fmt: skip
    assert with_node(trial, "n0", 4)["request_id"] == "b1/a/c1/0"  # planned ids stay


def test_the_spec_takes_ray_and_placement_and_refuses_a_wrong_arm_or_address() -> None:
    base = {"base": {"engine": {"kind": "replay", "model": "m"}}, "arms": {"a": {}, "b": {}}}
    spec = ExperimentSpec.model_validate(
        {**base, "ray": {"address": "local:2"}, "placement": {"a": ["n0"]}}
    )
    assert spec.ray is not None and spec.ray.address == "local:2"
    assert spec.placement == {"a": ("n0",)}
    with pytest.raises(ValueError, match=r"placement: 'c' is not an arm; arms: a, b"):
        ExperimentSpec.model_validate({**base, "placement": {"c": ["n0"]}})
    with pytest.raises(ValueError, match=r"placement: 'a' lists no node"):
        ExperimentSpec.model_validate({**base, "placement": {"a": []}})
    with pytest.raises(ValueError, match=r"1 to 8 nodes"):
        ExperimentSpec.model_validate({**base, "ray": {"address": "local:9"}})


def test_a_spread_run_warns_what_ran_at_once_and_which_arm_missed_a_node() -> None:
    from servelab.analysis.run_warnings import WARNING_KINDS, spread_warnings

    def trial(arm: str, block: int, node: str | None) -> dict[str, object]:
        row: dict[str, object] = {"arm": arm, "block": block, "phase": "trial", "outcome": "ok"}
        return {**row, "node": node} if node else row

    assert spread_warnings([trial("a", 0, None), trial("b", 0, None)]) == []  # one machine
    assert spread_warnings([trial("a", 0, "n0"), trial("b", 0, "n0")]) == []  # one node
    rotated = [trial("a", 0, "n0"), trial("b", 0, "n1"), trial("a", 1, "n1"), trial("b", 1, "n0")]
    [w] = spread_warnings(rotated)
    assert w.kind == "spread_over_nodes" and "2 Ray nodes (n0, n1)" in w.detail
    assert "never ran" not in w.detail and "spread_over_nodes" in WARNING_KINDS
    pinned = [trial("a", 0, "n0"), trial("b", 0, "n1"), trial("a", 1, "n0"), trial("b", 1, "n1")]
    [w] = spread_warnings(pinned)
    assert "(a never ran on n1; b never ran on n0)" in w.detail and "placement" in w.advice
