"""Fixed micro-batches: a candidate's device pass depends on its index and the micro-batch size
only, never on which candidates a shard asks for."""

import pytest
import torch

from fairskin.generation.groups import MicroBatch, micro_batch_of, micro_batches, pixel_environment
from fairskin.generation.plan import CandidateRange, candidate_cap, cut_into_shards


def test_a_candidate_belongs_to_one_group_at_one_position():
    assert micro_batch_of(0, 3) == (0, 0)
    assert micro_batch_of(5, 3) == (1, 2)
    assert micro_batch_of(6, 3) == (2, 0)
    assert micro_batch_of(7, 1) == (7, 0)
    with pytest.raises(ValueError):
        micro_batch_of(1, 0)
    with pytest.raises(ValueError):
        micro_batch_of(-1, 3)


def test_groups_are_whole_and_keep_only_the_wanted_members():
    groups = micro_batches([("MEL", 6, 4), ("MEL", 6, 2), ("MEL", 6, 3), ("NV", 5, 0)], 3)
    assert groups == [
        MicroBatch(("MEL", 6), 1, 3, (3, 4)),
        MicroBatch(("MEL", 6), 0, 3, (2,)),
        MicroBatch(("NV", 5), 0, 3, (0,)),
    ]
    assert list(groups[0].indices) == [3, 4, 5] and groups[0].positions == [0, 1]
    assert list(groups[1].indices) == [0, 1, 2] and groups[1].positions == [2]


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_the_pass_a_candidate_is_computed_in_does_not_depend_on_sharding(size):
    """Whatever the shard size, and whatever a resumed shard had already stored, candidate i is
    computed in the same pass (same member seeds) at the same position."""
    quotas = {("MEL", 6): 9, ("NV", 2): 4}

    def passes(shard_size, stored=frozenset()):
        seen = {}
        caps = [
            CandidateRange(dx, fst, 0, candidate_cap(quota, 1.5))
            for (dx, fst), quota in quotas.items()
        ]
        for shard in cut_into_shards(caps, shard_size):
            todo = [
                (r.diagnosis, r.fst, i)
                for r in shard
                for i in range(r.start, r.stop)
                if (r.diagnosis, r.fst, i) not in stored
            ]
            for group in micro_batches(todo, size):
                assert len(group.indices) == size  # every pass is a whole group
                for index, position in zip(group.wanted, group.positions, strict=True):
                    assert group.indices[position] == index
                    seen[(*group.stratum, index)] = (tuple(group.indices), position)
        return seen

    reference = passes(64)
    assert len(reference) == 14 + 6  # every candidate up to each cap, once
    for shard_size in (1, 3, 5):
        assert passes(shard_size) == reference
    resumed = passes(5, stored={("MEL", 6, 1), ("MEL", 6, 4), ("NV", 2, 0)})
    assert resumed == {
        k: v for k, v in reference.items() if k not in {("MEL", 6, 1), ("MEL", 6, 4), ("NV", 2, 0)}
    }


def test_the_environment_names_what_else_the_pixels_depend_on():
    env = pixel_environment("cpu", torch.float32)
    assert env["device"] == "cpu" and env["dtype"] == "float32"
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert "diffusers" in env
