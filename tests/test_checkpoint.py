from collections import OrderedDict

import pytest
import torch

from mobileseg import zoo
from mobileseg.errors import CheckpointError
from mobileseg.zoo.checkpoint import load_checkpoint, rename_keys
from mobileseg.zoo.sinet import SINET_KEY_RULES

from conftest import official_weights


def test_rename_rules_map_the_authors_names():
    authors = ["encoder.level2.1.d2.act_conv1x1.1.weight", "encoder.level2_0.conv.1.dense.2.bias", "classifier.1.weight",
               "encoder.level3.0.BR.bn.running_var", "encoder.classifier.conv.weight", "level2_C.act.weight"]  # fmt: skip
    renamed = rename_keys(dict.fromkeys(authors), SINET_KEY_RULES)
    assert renamed == {
        "encoder.level2.1.d2.act_conv1x1.1.weight": "stage2.1.branches.1.pw.weight",
        "encoder.level2_0.conv.1.dense.2.bias": "down2.se.fc2.bias",
        "classifier.1.weight": "decoder.head.weight",
        "encoder.level3.0.BR.bn.running_var": "stage3.0.out.bn.running_var",
        "encoder.classifier.conv.weight": "classifier.weight",
        "level2_C.act.weight": "decoder.skip.act.weight",
    }


def test_wrong_checkpoint_names_the_model_it_belongs_to():
    with pytest.raises(CheckpointError, match=r"official checkpoint of 'c3net'.*missing keys.*unexpected keys"):
        zoo.build("sinet", official_weights("c3net"))


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    data = official_weights("sinet").read_bytes()
    truncated = tmp_path / "sinet.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        zoo.build("sinet", truncated)


def test_missing_and_non_state_dict_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        zoo.build("sinet", tmp_path / "nope.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        zoo.build("sinet", tmp_path / "tensor.pth")


def test_misshaped_and_missing_keys_are_named(tmp_path):
    state = torch.load(official_weights("sinet"), map_location="cpu")
    state["encoder.level1.conv.weight"] = torch.zeros(12, 3, 5, 5)
    del state["bn_2.weight"]
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.fine_bn\.weight.*mis-shaped.*stem\.conv\.weight"):
        zoo.build("sinet", tmp_path / "edited.pth")


def test_our_own_state_dict_round_trips(tmp_path):
    model = zoo.build("extremec3net", official_weights("extremec3net"))
    torch.save(OrderedDict(model.state_dict()), tmp_path / "ours.pth")
    again = zoo.build("extremec3net", tmp_path / "ours.pth")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_without_batch_counters_loads():
    # The authors' ExtremeC3Net file predates BatchNorm's num_batches_tracked buffers.
    state = torch.load(official_weights("extremec3net"), map_location="cpu")
    assert not any(k.endswith("num_batches_tracked") for k in state)
    model = zoo.spec("extremec3net").builder()
    load_checkpoint(model, official_weights("extremec3net"), zoo.spec("extremec3net").key_rules, "extremec3net")
